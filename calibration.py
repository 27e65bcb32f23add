"""Where the "same or different" cut goes on your own classes.

A run's threshold is calibrated on its validation pairs. Photos from another camera or
framing move every distance, and a threshold set on one set of classes can then say
"same" (or "different") for every pair of another. `calibrate` sets a threshold on a
labelled gallery instead: it splits the gallery's classes in two, calibrates on one
half and reports the accuracy, false-accept and false-reject rates it measured on the
other, which it never saw. `drift` tells when a gallery's distances lie outside those a
threshold was calibrated on.
"""
import itertools

import numpy as np

import metrics

MAX_PAIRS = 20000  # genuine pairs per half at most (and as many impostor pairs)
DRIFT_PERCENTILES = (5, 95)  # the range of impostor distances a threshold knows
DRIFT_PAIRS = 2000  # impostor pairs drawn to measure a set's spread
DRIFT_MIN_CLASSES = 5  # fewer classes cannot show how far apart classes lie


def impostor_pairs(labels, rng, n):
    """`n` pairs (or fewer when the set holds fewer) of two images of different
    classes, drawn at random: (n, 2) indices into labels."""
    labels = np.asarray(labels)
    first = rng.integers(0, len(labels), 4 * n + 16)
    second = rng.integers(0, len(labels), len(first))
    return np.stack([first, second], 1)[labels[first] != labels[second]][:n]


def gallery_pairs(labels, rng, max_pairs=MAX_PAIRS):
    """Every pair of two images of one class (a random `max_pairs` of them when there
    are more), and as many impostor pairs of two images of different classes drawn at
    random: (pairs (P, 2) of indices into labels, pair labels, 1 = genuine)."""
    labels = np.asarray(labels)
    genuine = [pair for c in np.unique(labels)
               for pair in itertools.combinations(np.flatnonzero(labels == c), 2)]
    genuine = np.asarray(genuine, np.int64).reshape(-1, 2)
    if len(genuine) > max_pairs:
        genuine = genuine[rng.choice(len(genuine), max_pairs, replace=False)]
    impostor = impostor_pairs(labels, rng, len(genuine))
    pairs = np.concatenate([genuine, impostor])
    return pairs, np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]


def impostor_summary(embeddings, labels, scorer=metrics.EUCLIDEAN, n_pairs=DRIFT_PAIRS, seed=0):
    """Median and DRIFT_PERCENTILES range of the distances between images of different
    classes (random pairs): how far apart a set's classes lie, whatever their number;
    None for a set of fewer than DRIFT_MIN_CLASSES classes."""
    if len(np.unique(labels)) < DRIFT_MIN_CLASSES:
        return None
    pairs = impostor_pairs(labels, np.random.default_rng(seed), n_pairs)
    distances = scorer.pairs(embeddings, pairs)
    low, high = np.percentile(distances, DRIFT_PERCENTILES)
    return {"median": float(np.median(distances)), "low": float(low),
            "high": float(high)}


def calibrate(embeddings, labels, scorer=metrics.EUCLIDEAN, far=None, seed=0, compare=None):
    """A threshold calibrated on half of the classes of a labelled set (`labels`: the
    class of each embedding) and the error rates it gives on the other half.

    Rule: the best pair accuracy (with the equal-error-rate threshold beside it), or
    with `far` the largest threshold that accepts at most that share of impostor pairs.
    `compare`: another threshold (the run's) to score on the same checking pairs.
    Raises ValueError when the set cannot be calibrated, naming why."""
    labels = np.asarray(labels)
    names, counts = np.unique(labels, return_counts=True)
    several = names[counts >= 2]
    if not len(several):
        raise ValueError("every class holds one image, so there is no genuine pair to "
                         "calibrate on: add a second image to some classes (at least 4 "
                         "classes with 2 or more)")
    if len(several) < 4:
        raise ValueError(f"{len(several)} class(es) hold 2 or more images; calibrating "
                         f"on half of them and checking on the other half needs at "
                         f"least 4 such classes")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(several)
    halves = {"calibration": shuffled[: len(shuffled) // 2],
              "check": shuffled[len(shuffled) // 2:]}
    distances = {}
    for name, classes in halves.items():
        members = np.flatnonzero(np.isin(labels, classes))
        pairs, pair_labels = gallery_pairs(labels[members], rng)
        distances[name] = (scorer.pairs(embeddings[members], pairs),
                           pair_labels)
    d, y = distances["calibration"]
    if far is None:
        threshold = metrics.best_threshold(d, y)[0]
        rule = "the best pair accuracy"
    else:
        threshold = metrics.far_threshold(d, y, far)
        rule = f"a false-accept rate of at most {far:g}"
    check_d, check_y = distances["check"]
    compared = {} if compare is None else {
        "compared_threshold": compare,
        "expected_at_compared": metrics.error_rates(check_d, check_y, compare)}
    return {**compared,
        "threshold": threshold, "rule": rule, "far_asked": far,
        "eer_threshold": metrics.roc(d, y)[5],
        "calibration_classes": len(halves["calibration"]),
        "check_classes": len(halves["check"]),
        "calibration_pairs": int(len(y)), "check_pairs": int(len(check_y)),
        "expected": metrics.error_rates(check_d, check_y, threshold),
        "check_roc_auc": metrics.roc(check_d, check_y)[3],
        # What any threshold could reach on the checking pairs (chosen on them).
        "check_best_accuracy": metrics.best_threshold(check_d, check_y)[1],
        "impostor_distances": impostor_summary(embeddings, labels, scorer, seed=seed),
    }


def drift(embeddings, labels, reference, scorer=metrics.EUCLIDEAN):
    """None when the median distance between images of different classes of a labelled
    set (a gallery) lies within the `reference` range that a threshold was calibrated
    on (impostor_summary of its calibration set), else that median: the threshold's
    decisions on this set are not to be trusted. None too where either side has fewer
    than DRIFT_MIN_CLASSES classes."""
    summary = impostor_summary(embeddings, labels, scorer) if reference else None
    if summary is None:
        return None
    median = summary["median"]
    return None if reference["low"] <= median <= reference["high"] else median


def drift_message(median, reference, threshold, source, calibrate_hint):
    return (f"the distances here lie outside those the threshold {threshold:.4f} was "
            f"calibrated on ({source}): images of different classes lie {median:.4f} "
            f"apart (median), against {reference['low']:.4f}-{reference['high']:.4f} "
            f"there, so its same/different decisions may all lean one way; "
            f"{calibrate_hint}")
