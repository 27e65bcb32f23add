"""metrics: pair scoring from embeddings must agree with the model's distance layer."""
import numpy as np
import pytest

import keras
import metrics
from siamese_network_funcs import EuclideanDistance, build_siamese_model


def test_pair_distances_match_the_distance_layer():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(10, 6)).astype(np.float32)
    pairs = np.array([[0, 1], [2, 2], [9, 3], [4, 8]], np.int32)  # [2, 2]: zero distance
    expected = np.asarray(EuclideanDistance()([embeddings[pairs[:, 0]],
                                               embeddings[pairs[:, 1]]]))[:, 0]
    distances = metrics.pair_distances(embeddings, pairs)
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
    np.testing.assert_allclose(metrics.pair_distances(embeddings, pairs),
                               from_model[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("threshold, expected", [(0.5, 4 / 6), (0.25, 3 / 6),
                                                 (2.0, 3 / 6)])
def test_pair_accuracy_counts_same_below_the_threshold(threshold, expected):
    distances = np.array([0.1, 0.3, 0.6, 0.9, 0.2, 1.5])
    labels = np.array([1, 1, 1, 0, 0, 0], np.float32)  # 1 = genuine
    assert metrics.pair_accuracy(distances, labels, threshold) == pytest.approx(expected)
