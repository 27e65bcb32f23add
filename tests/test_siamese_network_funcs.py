"""siamese_network_funcs: the distance layer, loss, metric and the shared-weight model."""
import numpy as np
import pytest

import siamese_network_funcs as snf
from siamese_network_funcs import (ARCHITECTURES, ContrastiveLoss, DistanceAccuracy,
                                   EuclideanDistance, build_siamese_model)
import keras
import tensorflow as tf

# A size each base network is meant for (the inputs its dataset preset produces).
INPUT_SHAPES = {
    "att_faces": (56, 46, 1),  # 112x92 faces, every 2nd pixel
    "plantvillage": (112, 112, 1),
    "fruits360": (100, 100, 3),
    "mnist": (28, 28, 1),
    "omniglot": (52, 52, 1),
    "digits": (8, 8, 1),
    "compact": (64, 64, 3),
}


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


def _numpy_contrastive(y, d, margin):
    d = d.reshape(-1)
    return np.mean(y * d ** 2 + (1 - y) * np.maximum(margin - d, 0) ** 2)


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_contrastive_loss_matches_the_formula_without_broadcasting(margin):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 16).astype(np.float32)  # (B,)
    d = rng.uniform(0, 2.5, (16, 1)).astype(np.float32)  # (B, 1): both sides of margin
    assert (d < margin).any() and (d > margin).any() and 0 < y.sum() < 16
    expected = _numpy_contrastive(y, d, margin)
    loss = float(ContrastiveLoss(margin=margin)(y, d))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # The (B,) x (B, 1) broadcast to (B, B) gives another number, so the check bites.
    broadcast = np.mean(y[None, :] * d ** 2
                        + (1 - y[None, :]) * np.maximum(margin - d, 0) ** 2)
    assert not np.isclose(broadcast, expected, rtol=1e-3)
    # Labels as (B, 1) or integers give the same loss.
    np.testing.assert_allclose(float(ContrastiveLoss(margin=margin)(y[:, None], d)),
                               expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(ContrastiveLoss(margin=margin)(y.astype(np.int32), d)), expected, rtol=1e-5)


def test_contrastive_loss_round_trips_its_margin():
    loss = ContrastiveLoss.from_config(ContrastiveLoss(margin=2.5).get_config())
    assert loss.margin == 2.5


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_distance_accuracy_matches_numpy(threshold):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 32).astype(np.float32)
    d = rng.uniform(0, 1.5, (32, 1)).astype(np.float32)
    expected = np.mean((d.reshape(-1) < threshold).astype(np.float32) == y)
    assert 0 < expected < 1
    metric = DistanceAccuracy(threshold=threshold)
    metric.update_state(y, d)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    # Accumulates over batches like a mean of all pairs.
    metric.reset_state()
    metric.update_state(y[:10], d[:10])
    metric.update_state(y[10:], d[10:])
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    restored = DistanceAccuracy.from_config(metric.get_config())
    assert restored.threshold == threshold


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_embeds(architecture):
    shape = INPUT_SHAPES[architecture]
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model(shape, architecture)
    dim = ARCHITECTURES[architecture]["embedding_dim"]
    images = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype(np.float32)
    embeddings = np.asarray(base(images, training=False))
    assert embeddings.shape == (2, dim)
    assert np.isfinite(embeddings).all()
    distances = np.asarray(model([images, images[::-1]], training=False))
    assert distances.shape == (2, 1)
    np.testing.assert_allclose(distances, _numpy_distance(embeddings, embeddings[::-1]),
                               rtol=1e-4, atol=1e-3)
    keras.backend.clear_session()


def test_every_architecture_has_an_input_shape_in_this_test():
    assert set(INPUT_SHAPES) == set(ARCHITECTURES)


def test_siamese_model_shares_one_base_network():
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model((8, 8, 1), "digits")
    assert len(model.weights) == len(base.weights)
    assert model.count_params() == base.count_params()
    conv_layers = [l for l in base.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(conv_layers) == len(ARCHITECTURES["digits"]["conv"])
    model_kernels = [w for w in model.weights if w.name == "kernel" and len(w.shape) == 4]
    assert len(model_kernels) == len(conv_layers)

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 8, 8, 1)).astype(np.float32)
    b = rng.integers(0, 256, (4, 8, 8, 1)).astype(np.float32)
    same = np.asarray(model([a, a], training=False))
    assert (same < 1e-3).all()
    different = np.asarray(model([a, b], training=False))
    assert (different > 1e-2).all()
    embeddings_a = np.asarray(base(a, training=False))
    embeddings_b = np.asarray(base(b, training=False))
    np.testing.assert_allclose(different, _numpy_distance(embeddings_a, embeddings_b),
                               rtol=1e-4)
    # Zeroing the base's last layer changes both branches at once: every embedding is
    # then the bias, so every distance collapses to ~0.
    last = base.layers[-1]
    last.kernel.assign(np.zeros(last.kernel.shape, np.float32))
    assert (np.asarray(model([a, b], training=False)) < 1e-3).all()


def test_unknown_architecture_raises():
    with pytest.raises(ValueError) as error:
        build_siamese_model((8, 8, 1), "no_such_net")
    message = str(error.value)
    assert "no_such_net" in message
    for name in ARCHITECTURES:
        assert name in message


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError, match="adamw"):
        snf.make_optimizer("adamw", 0.001)


def test_compile_model_uses_the_configured_margin():
    model, _ = build_siamese_model((8, 8, 1), "digits")
    config = {"optimizer": "sgd", "learning_rate": 0.05, "margin": 2.0}
    snf.compile_model(model, config)
    assert isinstance(model.loss, ContrastiveLoss) and model.loss.margin == 2.0
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    metrics = model.get_compile_config()["metrics"]
    assert [m["class_name"] for m in metrics] == ["DistanceAccuracy"]
    assert metrics[0]["config"]["threshold"] == 1.0  # margin / 2
    assert metrics[0]["config"]["name"] == "accuracy"  # history's accuracy/val_accuracy
