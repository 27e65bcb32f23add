"""calibration and its metrics: thresholds set on a labelled gallery, checked on the
classes they were not set on, the false-accept rule, the bounded score and drift."""
import numpy as np
import pytest

import calibration
import metrics


def line_gallery(n_classes=8, per_class=5, spread=0.1, gap=10.0, seed=0):
    """1-d embeddings: class c around gap x c, its images within +-spread, so genuine
    distances are at most 2 x spread and impostor ones at least gap - 2 x spread."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    embeddings = gap * labels + rng.uniform(-spread, spread, len(labels))
    return embeddings[:, None].astype(np.float32), labels


def test_gallery_pairs_are_genuine_within_classes_and_impostor_across():
    labels = np.repeat(np.arange(4), 3)
    pairs, pair_labels = calibration.gallery_pairs(labels, np.random.default_rng(0))
    genuine = pairs[pair_labels == 1]
    assert len(genuine) == 4 * 3  # every two images of each class: 3 pairs per class
    assert (labels[genuine[:, 0]] == labels[genuine[:, 1]]).all()
    impostor = pairs[pair_labels == 0]
    assert len(impostor) == len(genuine)
    assert (labels[impostor[:, 0]] != labels[impostor[:, 1]]).all()


def test_calibration_finds_the_gap_and_checks_it_on_unseen_classes():
    embeddings, labels = line_gallery()
    report = calibration.calibrate(embeddings, labels, compare=100.0)
    assert 0.2 < report["threshold"] < 9.8
    assert report["calibration_classes"] == report["check_classes"] == 4
    assert report["expected"] == {"accuracy": 1.0, "far": 0.0, "frr": 0.0}
    # A threshold beyond every impostor accepts them all: half the pairs are wrong.
    assert report["expected_at_compared"] == {"accuracy": 0.5, "far": 1.0, "frr": 0.0}
    assert report["rule"] == "the best pair accuracy"


def test_false_accept_rule_against_a_hand_computed_case():
    distances = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0.5, 0.7], float)
    labels = np.array([0] * 10 + [1, 1])
    assert metrics.far_threshold(distances, labels, 0.2) == 3.0  # accepts 1 and 2
    assert metrics.far_threshold(distances, labels, 0.25) == 3.0  # floor(2.5) = 2
    assert metrics.far_threshold(distances, labels, 0.0) == 1.0  # accepts none
    assert metrics.error_rates(distances, labels, 3.0) == {
        "accuracy": 10 / 12, "far": 0.2, "frr": 0.0}
    assert metrics.error_rates(distances, labels, 0.6)["frr"] == 0.5
    with pytest.raises(ValueError, match="far must be from 0"):
        metrics.far_threshold(distances, labels, 1.0)


def test_calibration_by_false_accept_rate_keeps_to_it_on_the_calibration_half():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 6)
    embeddings = rng.normal(size=(len(labels), 4)) + 1.5 * np.eye(4)[labels % 4] \
        + 0.3 * rng.normal(size=(20, 4))[labels]
    loose = calibration.calibrate(embeddings, labels, far=0.2)
    strict = calibration.calibrate(embeddings, labels, far=0.01)
    assert strict["threshold"] < loose["threshold"]
    assert strict["rule"] == "a false-accept rate of at most 0.01"
    assert strict["expected"]["far"] <= loose["expected"]["far"]


@pytest.mark.parametrize("per_class, n_classes, message", [
    (1, 10, "every class holds one image"),
    (3, 3, "3 class(es) hold 2 or more images"),
])
def test_galleries_that_cannot_be_calibrated_say_why(per_class, n_classes, message):
    embeddings, labels = line_gallery(n_classes, per_class)
    with pytest.raises(ValueError) as error:
        calibration.calibrate(embeddings, labels)
    assert message in str(error.value)


def test_similarity_is_one_at_zero_one_half_at_the_threshold_and_falls_beyond():
    scores = metrics.similarity([0.0, 0.4, 0.8, 1.6], 0.8)
    np.testing.assert_allclose(scores, [1.0, 2 ** -0.25, 0.5, 2 ** -4.0])
    np.testing.assert_array_equal(metrics.similarity([0.0, 0.3], 0.0), [1.0, 0.0])


def test_drift_fires_on_a_shifted_set_and_not_on_the_same_kind_of_set():
    reference_set = line_gallery(seed=0)
    reference = calibration.impostor_summary(*reference_set)
    same_kind = line_gallery(seed=1)
    assert calibration.drift(*same_kind, reference) is None
    squeezed = line_gallery(gap=3.0, seed=1)  # classes nearer: impostors look genuine
    assert calibration.drift(*squeezed, reference) == pytest.approx(
        calibration.impostor_summary(*squeezed)["median"])
    assert calibration.drift(*squeezed, {}) is None  # a run with nothing to compare
    few = line_gallery(n_classes=4, gap=3.0)
    assert calibration.impostor_summary(*few) is None  # too few classes to say
    assert calibration.drift(*few, reference) is None
