"""siamese_network_funcs: the shared-weight pair model, its optimizer, compilation for
each pairing, and the pair scorer of Koch's head."""
import numpy as np
import pytest

import keras
import tensorflow as tf
import metrics
import siamese_network_funcs as snf
from backbones import BACKBONES
from configurator import get_config
from loss_functions import ContrastiveLoss, CosineClassifier
from siamese_network_funcs import build_siamese_model


def _numpy_distance(a, b):
    return np.sqrt(np.sum((a - b) ** 2, axis=-1, keepdims=True))


def test_siamese_model_shares_one_base_network():
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model((8, 8, 1), "digits")
    assert len(model.weights) == len(base.weights)
    assert model.count_params() == base.count_params()
    conv_layers = [l for l in base.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(conv_layers) == len(BACKBONES["digits"]["conv"])
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


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError, match="adamw"):
        snf.make_optimizer("adamw", 0.001)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_shrinks_kernels_only(name):
    # With zero gradients only the decay moves the weights: each kernel by
    # learning_rate x weight_decay of itself per step, biases and batch-norm not at all.
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(2, bias_initializer="ones"),
                              keras.layers.BatchNormalization(beta_initializer="ones")])
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer = snf.make_optimizer(name, learning_rate=0.1, weight_decay=0.5)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    for _ in range(2):
        optimizer.apply_gradients(zip(zeros, model.trainable_variables))
    kernel, bias, gamma, beta = [v.numpy() for v in model.trainable_variables]
    np.testing.assert_allclose(kernel, before[0] * (1 - 0.1 * 0.5) ** 2, rtol=1e-6)
    for after, start in zip((bias, gamma, beta), before[1:]):
        np.testing.assert_array_equal(after, start)
    # 0 = no decay at all
    plain = snf.make_optimizer(name, learning_rate=0.1)
    plain.apply_gradients(zip(zeros, model.trainable_variables))
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), kernel, rtol=1e-6)


def test_compile_model_uses_the_configured_margin():
    model, base = build_siamese_model((8, 8, 1), "digits")
    config = get_config(dataset="digits", optimizer="sgd", learning_rate=0.05, margin=2.0)
    assert snf.compile_network(config, model, base) is model
    assert isinstance(model.loss, ContrastiveLoss) and model.loss.margin == 2.0
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    metrics = model.get_compile_config()["metrics"]
    assert [m["class_name"] for m in metrics] == ["DistanceAccuracy"]
    assert metrics[0]["config"]["threshold"] == 1.0  # margin / 2
    assert metrics[0]["config"]["name"] == "accuracy"  # history's accuracy/val_accuracy


@pytest.mark.parametrize("pairing", ["pairs", "batch"])
def test_cosine_schedule_falls_from_the_rate_to_zero_over_all_epochs(pairing):
    model, base = build_siamese_model((8, 8, 1), "digits")
    config = get_config(dataset="digits", optimizer="adam", learning_rate=0.01, epochs=3,
                        lr_schedule="cosine", pairing=pairing)
    network = snf.compile_network(config, model, base, steps_per_epoch=4)
    assert network is (model if pairing == "pairs" else base)
    optimizer = network.optimizer
    for step in (0, 3, 6, 9, 12):  # 12 = 3 epochs x 4 steps
        optimizer.iterations.assign(step)
        expected = 0.01 * 0.5 * (1 + np.cos(np.pi * step / 12))
        assert float(optimizer.learning_rate) == pytest.approx(expected, abs=1e-9)


def _separable_classes():
    """7 classes x 4 noisy 8x8 images, each class brighter than the one before."""
    labels = np.repeat(np.arange(7), 4)
    images = (np.random.default_rng(0).integers(0, 64, (28, 8, 8, 1))
              + 24 * labels[:, None, None, None])
    return images.astype(np.float32), labels


def test_normsoftmax_fits_a_classifier_over_the_classes_and_trains_the_base():
    _, base = build_siamese_model((8, 8, 1), "digits", normalize=True)
    config = get_config(dataset="digits", learning_rate=0.01, loss="normsoftmax",
                        temperature=0.1, pairing="batch", monitor="val_oneshot")
    fitted = snf.compile_network(config, None, base, num_classes=7)
    assert fitted is not base and fitted.output.shape == (None, 7)
    assert isinstance(fitted.layers[-1], CosineClassifier)
    images, labels = _separable_classes()
    before = keras.ops.convert_to_numpy(base(images))
    history = fitted.fit(images, labels, epochs=15, batch_size=28, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert not np.allclose(keras.ops.convert_to_numpy(base(images)), before)


@pytest.mark.parametrize("loss, output_shape", [("supcon", (None, 50)),
                                                 ("normsoftmax", (None, 7))])
def test_projection_head_is_trained_through_and_left_out_of_the_base(loss, output_shape):
    model, base = build_siamese_model((8, 8, 1), "digits", normalize=True,
                                      projection_head=True)
    # digits: Dense 128 -> a 50-d embedding layer, which becomes the head.
    assert base.output.shape == (None, 128)
    config = get_config(dataset="digits", learning_rate=0.01, loss=loss,
                        temperature=0.1, pairing="batch", projection_head=True,
                        monitor="val_oneshot")
    fitted = snf.compile_network(config, model, base, num_classes=7)
    assert fitted.output.shape == output_shape
    assert fitted.get_layer("projection").units == 50
    assert "projection" not in [layer.name for layer in base.layers]
    images, labels = _separable_classes()
    before = keras.ops.convert_to_numpy(base(images))
    history = fitted.fit(images, labels, epochs=15, batch_size=28, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    features = keras.ops.convert_to_numpy(base(images))
    assert not np.allclose(features, before)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    # The pair model compares the features, not the head's output.
    distances = keras.ops.convert_to_numpy(model([images[:5], images[5:10]]))[:, 0]
    np.testing.assert_allclose(distances,
                               np.linalg.norm(features[:5] - features[5:10], axis=1),
                               rtol=1e-4, atol=1e-5)


def test_pair_scorer_of_koch_head_matches_the_model_and_numpy():
    model, base = build_siamese_model((8, 8, 1), "digits", distance="l1_sigmoid")
    rng = np.random.default_rng(3)
    head_layer = model.get_layer(snf.HEAD_LAYER)
    kernel = rng.normal(size=head_layer.get_weights()[0].shape).astype(np.float32)
    head_layer.set_weights([kernel, np.array([0.3], np.float32)])
    a = rng.integers(0, 256, (6, 8, 8, 1)).astype(np.float32)
    b = rng.integers(0, 256, (6, 8, 8, 1)).astype(np.float32)
    ea, eb = base.predict(a, verbose=0), base.predict(b, verbose=0)
    expected = 1 / (1 + np.exp(-(np.abs(ea - eb) @ kernel[:, 0] + 0.3)))
    p = model.predict([a, b], verbose=0)
    assert p.shape == (6, 1)
    np.testing.assert_allclose(p[:, 0], expected, rtol=1e-4)
    scorer = snf.pair_scorer(model)
    np.testing.assert_allclose(scorer(ea, eb), 1 - expected, rtol=1e-4, atol=1e-6)
    pairs = np.array([[0, 1], [2, 2]])
    np.testing.assert_allclose(scorer.pairs(ea, pairs), scorer(ea[[0, 2]], ea[[1, 2]]))


def test_pair_scorer_of_a_euclidean_model_is_the_distance_layer():
    model, base = build_siamese_model((8, 8, 1), "digits")
    assert snf.pair_scorer(model) is metrics.EUCLIDEAN
    images = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 1)).astype(np.float32)
    embeddings = base.predict(images, verbose=0)
    np.testing.assert_allclose(metrics.EUCLIDEAN(embeddings, embeddings[::-1]),
                               model.predict([images, images[::-1]], verbose=0)[:, 0],
                               rtol=1e-4)


def test_l1_head_model_reloads_from_keras_file_and_json(tmp_path):
    model, _ = build_siamese_model((8, 8, 1), "digits", distance="l1_sigmoid")
    images = np.random.default_rng(4).integers(0, 256, (4, 8, 8, 1)).astype(np.float32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    from_json = keras.models.model_from_json(model.to_json())
    from_json.set_weights(model.get_weights())
    expected = model.predict([images, images[::-1]], verbose=0)
    for other in (reloaded, from_json):
        np.testing.assert_allclose(other.predict([images, images[::-1]], verbose=0),
                                   expected, rtol=1e-5)


def test_bce_label_convention_genuine_is_one():
    # A confident p(same) = 0.99 costs little for a genuine pair (1), much for an
    # impostor (0), through the compiled loss of the l1_sigmoid model.
    model, base = build_siamese_model((8, 8, 1), "digits", distance="l1_sigmoid")
    snf.compile_network(get_config(dataset="digits", distance="l1_sigmoid", loss="bce"),
                        model, base)
    p = np.array([[0.99]], np.float32)
    genuine = float(model.loss(np.array([[1.0]]), p))
    impostor = float(model.loss(np.array([[0.0]]), p))
    np.testing.assert_allclose(genuine, -np.log(0.99), rtol=1e-3)
    np.testing.assert_allclose(impostor, -np.log(0.01), rtol=1e-2)
