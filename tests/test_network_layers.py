"""network_layers: the pair outputs and unit-length embeddings, against NumPy."""
import numpy as np

import keras
import tensorflow as tf
from network_layers import EuclideanDistance
from siamese_network_funcs import build_siamese_model


def _numpy_distance(a, b):
    return np.sqrt(np.sum((a - b) ** 2, axis=-1, keepdims=True))


def test_euclidean_distance_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 5)).astype(np.float32)
    b = rng.normal(size=(6, 5)).astype(np.float32)
    out = np.asarray(EuclideanDistance()([a, b]))
    assert out.shape == (6, 1)
    np.testing.assert_allclose(out, _numpy_distance(a, b), rtol=1e-5)


def test_euclidean_distance_is_finite_with_a_finite_gradient_at_zero():
    rng = np.random.default_rng(1)
    a = tf.Variable(rng.normal(size=(3, 4)).astype(np.float32))
    b_values = rng.normal(size=(3, 4)).astype(np.float32)
    b_values[0] = a.numpy()[0]  # a zero-distance pair
    b = tf.Variable(b_values)
    with tf.GradientTape() as tape:
        distance = EuclideanDistance()([a, b])
        total = tf.reduce_sum(distance)
    gradients = tape.gradient(total, [a, b])
    assert np.isfinite(distance.numpy()).all()
    assert 0 <= distance.numpy()[0, 0] < 1e-3
    for gradient in gradients:
        assert np.isfinite(gradient.numpy()).all()
    # The non-zero pairs still get the true gradient (a - b) / d.
    expected = (a.numpy() - b_values)[1:] / _numpy_distance(a.numpy(), b_values)[1:]
    np.testing.assert_allclose(gradients[0].numpy()[1:], expected, rtol=1e-4)


def test_l2_normalize_gives_unit_embeddings_and_reloads(tmp_path):
    model, base = build_siamese_model((8, 8, 1), "digits", normalize=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)).astype(np.float32)
    norms = np.linalg.norm(base.predict(images, verbose=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict([images, images[::-1]], verbose=0),
                               model.predict([images, images[::-1]], verbose=0),
                               rtol=1e-5)
