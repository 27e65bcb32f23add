"""metrics: pair scoring from embeddings must agree with the model's distance layer."""
import numpy as np
import pytest

import keras
import metrics
from network_layers import EuclideanDistance
from siamese_network_funcs import build_siamese_model


def test_pair_distances_match_the_distance_layer():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(10, 6)).astype(np.float32)
    pairs = np.array([[0, 1], [2, 2], [9, 3], [4, 8]], np.int32)  # [2, 2]: zero distance
    expected = np.asarray(EuclideanDistance()([embeddings[pairs[:, 0]],
                                               embeddings[pairs[:, 1]]]))[:, 0]
    distances = metrics.EUCLIDEAN.pairs(embeddings, pairs)
    assert distances.shape == (4,)
    np.testing.assert_allclose(distances, expected, rtol=1e-5, atol=1e-7)
    assert distances[1] < 1e-3


def test_embed_then_score_equals_the_pair_model():
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model((8, 8, 1), "digits")
    images = np.random.default_rng(1).integers(0, 256, (12, 8, 8, 1)).astype(np.uint8)
    pairs = np.array([[0, 1], [3, 7], [11, 2], [5, 5]], np.int32)
    embeddings = metrics.embed(base, images, batch_size=5)  # several batches
    assert embeddings.shape == (12, 50)
    from_model = model.predict([images[pairs[:, 0]].astype(np.float32),
                                images[pairs[:, 1]].astype(np.float32)], verbose=0)
    np.testing.assert_allclose(metrics.EUCLIDEAN.pairs(embeddings, pairs),
                               from_model[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("threshold, expected", [(0.5, 4 / 6), (0.25, 3 / 6),
                                                 (2.0, 3 / 6)])
def test_pair_accuracy_counts_same_below_the_threshold(threshold, expected):
    distances = np.array([0.1, 0.3, 0.6, 0.9, 0.2, 1.5])
    labels = np.array([1, 1, 1, 0, 0, 0], np.float32)  # 1 = genuine
    assert metrics.pair_accuracy(distances, labels, threshold) == pytest.approx(expected)


# --- thresholds and ROC -----------------------------------------------------------------

def test_best_threshold_finds_the_known_cut():
    # Genuine pairs at 0.1-0.4, impostors at 0.6-0.9 plus one impostor at 0.3: the best
    # cut is between 0.4 and 0.6 with 8 of 9 pairs right.
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.3])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    threshold, accuracy = metrics.best_threshold(distances, labels)
    assert threshold == pytest.approx(0.5)
    assert accuracy == pytest.approx(8 / 9)
    assert metrics.pair_accuracy(distances, labels, threshold) == pytest.approx(accuracy)


def test_best_threshold_never_splits_equal_distances():
    distances = np.array([0.5, 0.5, 0.5, 0.5])
    labels = np.array([1, 1, 0, 0])
    threshold, accuracy = metrics.best_threshold(distances, labels)
    assert accuracy == 0.5
    assert metrics.pair_accuracy(distances, labels, threshold) == 0.5


def test_roc_of_a_perfect_and_of_a_reversed_score():
    labels = np.array([1, 1, 0, 0])
    _, _, _, auc, eer, eer_threshold = metrics.roc(np.array([0.1, 0.2, 0.8, 0.9]), labels)
    assert auc == 1.0 and eer == 0.0 and 0.2 <= eer_threshold <= 0.8
    assert metrics.roc(np.array([0.9, 0.8, 0.2, 0.1]), labels)[3] == 0.0


# --- N-way one-shot tasks ---------------------------------------------------------------


def test_oneshot_accuracy_picks_the_nearest_and_with_a_head_the_most_similar():
    embeddings = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.0, 2.0]])
    queries, candidates = np.array([0]), np.array([[2, 1, 3]])
    assert metrics.oneshot_accuracy(embeddings, queries, candidates, np.array([1])) == 1.0
    assert metrics.oneshot_accuracy(embeddings, queries, candidates, np.array([0])) == 0.0
    # A head whose alpha rewards differences (p grows with |a - b|) picks the farthest.
    koch = metrics.PairScorer(np.array([1.0, 1.0]), 0.0)
    assert metrics.oneshot_accuracy(embeddings, queries, candidates, np.array([2]),
                                    koch) == 1.0


@pytest.mark.parametrize("accuracy, n, expected", [
    (0.0, 10, (0.0, 0.2775)),  # Wilson 1927 / Newcombe 1998's 0 of 10
    (0.5, 100, (0.4038, 0.5962)),
    (1.0, 400, (0.9905, 1.0)),
])
def test_wilson_interval_matches_known_cases(accuracy, n, expected):
    low, high = metrics.wilson_interval(accuracy, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_interval_narrows_with_more_tasks_and_refuses_none():
    narrow = metrics.wilson_interval(0.9, 2000)
    wide = metrics.wilson_interval(0.9, 400)
    assert wide[0] < narrow[0] < 0.9 < narrow[1] < wide[1]
    with pytest.raises(ValueError, match="at least one trial"):
        metrics.wilson_interval(0.5, 0)
    assert metrics.with_interval(0.855, 400) == "0.8550 (95% CI 0.8171-0.8861, 400 tasks)"
