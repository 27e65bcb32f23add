"""Scoring pairs from embeddings: every distinct image is embedded once, then pairs are
compared in NumPy, so scoring thousands of pairs never reruns the network per pair."""
import numpy as np


def embed(base, images, batch_size=256, chunk_bytes=2 ** 28):
    """Embeddings (N, D) of uint8 images (N, H, W, C) through the base network, an
    array or image_cache.DiskImages; converted to float32 a chunk of at most
    `chunk_bytes` at a time, so memory holds one chunk, not 4 x the images."""
    per_image = int(np.prod(images.shape[1:])) * 4
    step = max(1, chunk_bytes // per_image)
    batch_size = min(batch_size, step)
    if len(images) <= step:
        return base.predict(np.asarray(images[:], np.float32), batch_size=batch_size,
                            verbose=0)
    return np.concatenate([
        base.predict(np.asarray(images[i:i + step], np.float32), batch_size=batch_size,
                     verbose=0) for i in range(0, len(images), step)])


class PairScorer:
    """How unlike two embeddings are, the way the run's pair output judges them:
    Euclidean distance, as the distance layer; or, given (alpha, bias) of Koch's
    weighted-L1 head, 1 - p(same) = 1 - sigmoid(alpha . |a - b| + bias). For both,
    smaller means more alike, so one threshold rule ("same" if below) serves both.
    siamese_network_funcs.pair_scorer(model) gives a trained model's."""

    def __init__(self, alpha=None, bias=0.0):
        self.alpha = None if alpha is None else np.asarray(alpha, np.float64)
        self.bias = float(bias)

    def __call__(self, a, b):
        """Dissimilarity of embeddings a and b over the last axis (broadcasting)."""
        if self.alpha is None:
            return np.sqrt(np.maximum(np.sum((a - b) ** 2, axis=-1), 1e-7))
        logits = np.abs(a - b) @ self.alpha + self.bias
        return 1.0 - 1.0 / (1.0 + np.exp(-logits))

    def pairs(self, embeddings, pairs):
        """Dissimilarity of each index pair (P, 2) -> (P,)."""
        return self(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])


EUCLIDEAN = PairScorer()


def pair_accuracy(distances, labels, threshold):
    """Share of pairs judged right when "same" (1) means distance < threshold."""
    predicted_same = (np.asarray(distances) < threshold).astype(np.float32)
    return float(np.mean(predicted_same == np.asarray(labels)))


# --- verification: thresholds and ROC ---------------------------------------------------

def best_threshold(distances, labels):
    """The distance threshold with the highest pair accuracy ("same" = d < threshold).

    Candidates are midpoints between consecutive sorted distances (plus both ends), so
    the answer is exact for the given pairs. Returns (threshold, accuracy).
    """
    distances = np.asarray(distances, np.float64)
    labels = np.asarray(labels)
    order = np.argsort(distances, kind="stable")
    sorted_d, sorted_y = distances[order], labels[order]
    # Threshold just above sorted_d[k]: pairs 0..k say "same", the rest "different".
    genuine_below = np.concatenate([[0], np.cumsum(sorted_y == 1)])
    impostor_above = np.sum(sorted_y == 0) - np.concatenate([[0],
                                                             np.cumsum(sorted_y == 0)])
    correct = genuine_below + impostor_above  # for k = 0..P pairs judged "same"
    # Only cut between distinct distances: equal distances must fall on one side.
    cut_ok = np.concatenate([[True], sorted_d[1:] > sorted_d[:-1], [True]])
    correct = np.where(cut_ok, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = sorted_d[0] - 1e-6 if len(sorted_d) else 0.0
    elif k == len(sorted_d):
        threshold = sorted_d[-1] + 1e-6
    else:
        threshold = (sorted_d[k - 1] + sorted_d[k]) / 2
    return float(threshold), float(correct[k] / max(len(labels), 1))


def far_threshold(distances, labels, far):
    """The largest threshold ("same" = d < threshold) at which at most a share `far` of
    the impostor pairs is accepted: the k-th smallest impostor distance, k = floor(far x
    impostors), so exactly the k nearer impostors fall below it (fewer on ties)."""
    if not 0 <= far < 1:
        raise ValueError(f"far must be from 0 up to, not including, 1 (a share of the "
                         f"impostor pairs, e.g. 0.001); got {far!r}")
    impostors = np.sort(np.asarray(distances, np.float64)[np.asarray(labels) == 0])
    if not len(impostors):
        raise ValueError("a false-accept rate needs impostor pairs")
    return float(impostors[int(np.floor(far * len(impostors)))])


def error_rates(distances, labels, threshold):
    """{"accuracy", "far", "frr"} at `threshold`: the share of all pairs judged right,
    of impostor pairs accepted (d < threshold) and of genuine pairs rejected."""
    distances, labels = np.asarray(distances), np.asarray(labels)
    accepted = distances < threshold
    impostor, genuine = labels == 0, labels == 1
    return {"accuracy": pair_accuracy(distances, labels, threshold),
            "far": float(np.mean(accepted[impostor])) if impostor.any() else None,
            "frr": float(np.mean(~accepted[genuine])) if genuine.any() else None}


def similarity(distance, threshold):
    """A score in [0, 1] beside a distance: 2^-(d / threshold)^2, so 1 for identical
    embeddings, 0.5 exactly at the threshold (the decision boundary) and towards 0 far
    beyond it. Decisions stay on the distance; this only reads more easily."""
    distance = np.asarray(distance, np.float64)
    if threshold <= 0:  # accepts nothing: only identical embeddings score
        return (distance == 0).astype(np.float64)
    return np.exp2(-np.square(distance / threshold))


def roc(distances, labels):
    """ROC of "same" scored by -distance: (fpr, tpr, thresholds as distances, auc, eer,
    eer_threshold). The equal error rate is where false accepts = false rejects."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = -np.asarray(distances, np.float64)
    fpr, tpr, score_thresholds = roc_curve(labels, scores)
    auc = float(roc_auc_score(labels, scores))
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    eer = float((fpr[i] + fnr[i]) / 2)
    eer_threshold = float(-score_thresholds[i]) if np.isfinite(score_thresholds[i]) \
        else float(np.max(distances))
    return fpr, tpr, -score_thresholds, auc, eer, eer_threshold


# --- N-way one-shot (Koch et al. 2015) --------------------------------------------------

def oneshot_accuracy(embeddings, queries, candidates, answers, scorer=EUCLIDEAN):
    """Share of tasks whose nearest candidate (smallest dissimilarity: Euclidean, or
    highest p(same) with Koch's head) is the query's class."""
    distances = scorer(embeddings[candidates], embeddings[queries][:, None, :])
    return float(np.mean(np.argmin(distances, axis=1) == answers))


def task_rows(tasks):
    """(the rows one-shot `tasks` use, the tasks re-indexed into those rows), so that
    only those images are embedded or read."""
    queries, candidates, answers = tasks
    rows = np.unique(np.concatenate([queries, candidates.ravel()]))
    return rows, (np.searchsorted(rows, queries), np.searchsorted(rows, candidates),
                  answers)


def wilson_interval(accuracy, n, z=1.96):
    """95% Wilson score interval (low, high) of a success rate `accuracy` measured on
    `n` independent trials; unlike accuracy +- 1.96 standard errors it stays inside
    [0, 1] and is right near 0 and 1 (Wilson 1927)."""
    if n <= 0:
        raise ValueError("a confidence interval needs at least one trial")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    spread = accuracy * (1 - accuracy) / n + z * z / (4 * n * n)
    half = z / (1 + z * z / n) * np.sqrt(spread)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def with_interval(accuracy, n):
    """"0.8550 (95% CI 0.8171-0.8861, 400 tasks)" for a report line."""
    low, high = wilson_interval(accuracy, n)
    return f"{accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, {n} tasks)"
