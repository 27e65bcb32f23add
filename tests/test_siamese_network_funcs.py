"""siamese_network_funcs: the distance layer, loss, metric and the shared-weight model."""
import numpy as np
import pytest

import metrics
import siamese_network_funcs as snf
from siamese_network_funcs import (ARCHITECTURES, ContrastiveLoss, DistanceAccuracy,
                                   EuclideanDistance, build_siamese_model,
                                   smallest_input)
import keras
import tensorflow as tf

# A size each base network is meant for (the inputs its dataset preset produces).
INPUT_SHAPES = {
    "att_faces": (56, 46, 1),  # 112x92 faces, every 2nd pixel
    "faces": (56, 46, 1),
    "faces_small": (56, 46, 1),
    "plantvillage": (112, 112, 1),
    "fruits360": (100, 100, 3),
    "koch": (105, 105, 1),
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


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_smallest_input_builds_and_one_pixel_less_is_a_clear_error(architecture):
    smallest = smallest_input(**ARCHITECTURES[architecture])
    build_siamese_model((smallest, smallest + 3, 1), architecture)  # builds: no error
    with pytest.raises(ValueError, match=f"too small for architecture='{architecture}', "
                                         f"which needs at least {smallest}x{smallest}"):
        build_siamese_model((smallest + 3, smallest - 1, 1), architecture)
    keras.backend.clear_session()


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


@pytest.mark.parametrize("conv_dropout, expected", [(None, 0.25), (0.1, 0.1), (0.0, None)])
def test_conv_dropout_overrides_the_architectures_rate(conv_dropout, expected):
    _, base = build_siamese_model((56, 46, 1), "faces", conv_dropout=conv_dropout)
    rates = [l.rate for l in base.layers if isinstance(l, keras.layers.Dropout)]
    conv_blocks = len(ARCHITECTURES["faces"]["conv"])
    assert rates == ([] if expected is None else [expected] * conv_blocks)


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
    model, _ = build_siamese_model((8, 8, 1), "digits")
    config = {"optimizer": "sgd", "learning_rate": 0.05, "margin": 2.0,
              "distance": "euclidean"}
    snf.compile_model(model, config)
    assert isinstance(model.loss, ContrastiveLoss) and model.loss.margin == 2.0
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    metrics = model.get_compile_config()["metrics"]
    assert [m["class_name"] for m in metrics] == ["DistanceAccuracy"]
    assert metrics[0]["config"]["threshold"] == 1.0  # margin / 2
    assert metrics[0]["config"]["name"] == "accuracy"  # history's accuracy/val_accuracy


@pytest.mark.parametrize("compile_fn, network", [
    (snf.compile_model, 0), (snf.compile_embedding, 1)])
def test_cosine_schedule_falls_from_the_rate_to_zero_over_all_epochs(compile_fn, network):
    built = build_siamese_model((8, 8, 1), "digits")[network]
    config = {"optimizer": "adam", "learning_rate": 0.01, "epochs": 3, "margin": 1.0,
              "distance": "euclidean", "loss": "contrastive", "lr_schedule": "cosine"}
    optimizer = compile_fn(built, config, steps_per_epoch=4).optimizer
    for step in (0, 3, 6, 9, 12):  # 12 = 3 epochs x 4 steps
        optimizer.iterations.assign(step)
        expected = 0.01 * 0.5 * (1 + np.cos(np.pi * step / 12))
        assert float(optimizer.learning_rate) == pytest.approx(expected, abs=1e-9)


# --- in-batch losses against loop-by-loop NumPy references ----------------------------

def _numpy_pairwise(x):
    return np.sqrt(np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1))


def _numpy_batch_contrastive(x, labels, margin):
    d = _numpy_pairwise(x)
    genuine, impostor = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            if labels[i] == labels[j]:
                genuine.append(d[i, j] ** 2)
            else:
                impostor.append(max(margin - d[i, j], 0.0) ** 2)
    return 0.5 * (np.mean(genuine) + np.mean(impostor))


def _numpy_triplet(x, labels, margin, mining, soft_margin=False):
    d = _numpy_pairwise(x)
    n = len(x)
    positives = lambda a: [p for p in range(n) if p != a and labels[p] == labels[a]]  # noqa: E731
    negatives = lambda a: [k for k in range(n) if labels[k] != labels[a]]  # noqa: E731

    def violation(d_ap, d_an):
        if soft_margin:
            return np.log1p(np.exp(d_ap - d_an))
        return max(d_ap - d_an + margin, 0.0)
    losses = []
    for a in range(n):
        if mining == "hard":
            if positives(a) and negatives(a):
                hardest_p = max(d[a, p] for p in positives(a))
                hardest_n = min(d[a, k] for k in negatives(a))
                losses.append(violation(hardest_p, hardest_n))
            continue
        for p in positives(a):
            if mining == "all":
                losses += [violation(d[a, p], d[a, k]) for k in negatives(a)]
                continue
            farther = [d[a, k] for k in negatives(a) if d[a, k] > d[a, p]]
            chosen = min(farther) if farther else max(d[a, k] for k in negatives(a))
            losses.append(violation(d[a, p], chosen))
    if mining == "all":
        losses = [value for value in losses if value > 0]
        return np.mean(losses) if losses else 0.0
    return np.mean(losses)


def _small_batch(seed=0, classes=(0, 0, 0, 1, 1, 2, 2, 2), dim=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(classes), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(classes, np.int32)


def test_pairwise_distances_match_numpy_with_a_zero_diagonal():
    x, _ = _small_batch()
    d = np.asarray(snf.pairwise_distances(tf.constant(x)))
    np.testing.assert_allclose(d, _numpy_pairwise(x), atol=1e-5)
    assert np.all(np.diag(d) == 0)


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_batch_contrastive_loss_matches_numpy(margin):
    x, labels = _small_batch(seed=1)
    loss = snf.BatchContrastiveLoss(margin=margin)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_batch_contrastive(x, labels, margin),
                               rtol=1e-5)


@pytest.mark.parametrize("mining", ["semi_hard", "hard", "all"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_loss_matches_numpy_for_each_mining(mining, seed):
    x, labels = _small_batch(seed=seed)
    loss = snf.TripletLoss(margin=0.3, mining=mining)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_triplet(x, labels, 0.3, mining),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mining", ["semi_hard", "hard", "all"])
def test_soft_margin_triplet_loss_matches_numpy_for_each_mining(mining):
    x, labels = _small_batch(seed=3)
    loss = snf.TripletLoss(margin=0.3, mining=mining, soft_margin=True)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_triplet(x, labels, 0.3, mining, True),
                               rtol=1e-5, atol=1e-6)


def test_soft_margin_keeps_pushing_where_the_hinge_is_already_zero():
    # Classes about 2 apart with margin 0.2: the hinge has nothing left to learn, while
    # softplus(d_ap - d_an) still pulls genuine pairs closer. Anchors 0 and 3: hardest
    # positive 0.1, hardest negative 2.0; anchors 1 and 2: 0.1 and 1.9.
    x = tf.Variable([[0.0, 0.0], [0.1, 0.0], [2.0, 0.0], [2.1, 0.0]])
    labels = np.array([0, 0, 1, 1], np.int32)
    soft = np.mean(np.log1p(np.exp([0.1 - 2.0, 0.1 - 1.9])))
    for soft_margin, expected in ((False, 0.0), (True, soft)):
        with tf.GradientTape() as tape:
            loss = snf.TripletLoss(mining="hard", soft_margin=soft_margin)(labels, x)
        gradient = tape.gradient(loss, x)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert (np.abs(gradient.numpy()).sum() > 0) == soft_margin


def test_triplet_mining_modes_differ_on_a_hand_made_batch():
    # Anchor 0 with positive 1 (d = 0.2) and negatives at 0.25 (semi-hard: farther than
    # the positive, inside the margin) and 0.05 (hard: closer than the positive).
    x = np.array([[0.0], [0.2], [0.25], [0.05]], np.float32)
    labels = np.array([0, 0, 1, 1], np.int32)
    losses = {m: float(snf.TripletLoss(margin=0.1, mining=m)(labels, x))
              for m in ("semi_hard", "hard", "all")}
    for mining, value in losses.items():
        np.testing.assert_allclose(value, _numpy_triplet(x, labels, 0.1, mining),
                                   rtol=1e-5)
    # anchor 0, positive 1: semi-hard picks 0.25 -> 0.2 - 0.25 + 0.1 = 0.05
    assert losses["semi_hard"] != losses["hard"] != losses["all"]


def test_triplet_loss_is_zero_when_classes_are_far_apart():
    x = np.array([[0.0, 0.0], [0.01, 0.0], [5.0, 0.0], [5.01, 0.0]], np.float32)
    labels = np.array([1, 1, 0, 0], np.int32)
    for mining in ("semi_hard", "hard", "all"):
        assert float(snf.TripletLoss(margin=0.2, mining=mining)(labels, x)) == 0.0


def test_genuine_label_convention_of_the_batch_losses():
    # Two identical embeddings: as one class (genuine) the loss is 0, as two classes
    # (impostor) it is the full margin^2 penalty.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], np.float32)
    together = float(snf.BatchContrastiveLoss(margin=1.0)([7, 7, 3], x))
    apart = float(snf.BatchContrastiveLoss(margin=1.0)([7, 8, 3], x))
    np.testing.assert_allclose(together, 0.5 * (0.0 + 0.0), atol=1e-6)
    np.testing.assert_allclose(apart, 0.5 * (1.0 / 3), atol=1e-5)


def _numpy_supcon(x, labels, temperature):
    similarity = x @ x.T / temperature
    losses = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        log_normaliser = np.log(np.sum(np.exp(similarity[i, others])))
        losses.append(-np.mean([similarity[i, p] - log_normaliser for p in positives]))
    return np.mean(losses)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
@pytest.mark.parametrize("classes", [(0, 0, 0, 1, 1, 2, 2, 2), (0, 0, 1, 2, 2, 3)])
def test_supcon_loss_matches_numpy(temperature, classes):
    # the second batch has a class with one image: it is a query with no positive
    # (skipped) but still a candidate for the others
    x, labels = _small_batch(seed=3, classes=classes)
    loss = snf.SupConLoss(temperature=temperature)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_supcon(x, labels, temperature),
                               rtol=1e-5)


def test_supcon_loss_prefers_classes_that_cluster():
    # the same four points, labelled by the clusters (genuine pairs close) or across them
    x = np.array([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0], [-0.99, 0.14]], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clustered = float(snf.SupConLoss()(np.array([1, 1, 0, 0]), x))
    crossed = float(snf.SupConLoss()(np.array([1, 0, 1, 0]), x))
    assert clustered < 0.01 < 10.0 < crossed


def test_supcon_loss_round_trips_its_temperature():
    loss = snf.SupConLoss.from_config(snf.SupConLoss(temperature=0.3).get_config())
    assert loss.temperature == 0.3


def test_cosine_classifier_logits_match_numpy():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(6, 4)).astype(np.float32)
    layer = snf.CosineClassifier(num_classes=3, temperature=0.05)
    logits = keras.ops.convert_to_numpy(layer(embeddings))
    vectors = keras.ops.convert_to_numpy(layer.class_vectors)
    expected = ((embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
                @ (vectors / np.linalg.norm(vectors, axis=0, keepdims=True)) / 0.05)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits.shape == (6, 3) and np.abs(logits).max() <= 1 / 0.05 + 1e-4


def _separable_classes():
    """7 classes x 4 noisy 8x8 images, each class brighter than the one before."""
    labels = np.repeat(np.arange(7), 4)
    images = (np.random.default_rng(0).integers(0, 64, (28, 8, 8, 1))
              + 24 * labels[:, None, None, None])
    return images.astype(np.float32), labels


def test_normsoftmax_fits_a_classifier_over_the_classes_and_trains_the_base():
    _, base = build_siamese_model((8, 8, 1), "digits", normalize=True)
    config = {"optimizer": "adam", "learning_rate": 0.01, "loss": "normsoftmax",
              "temperature": 0.1}
    fitted = snf.compile_embedding(base, config, num_classes=7)
    assert fitted is not base and fitted.output.shape == (None, 7)
    assert isinstance(fitted.layers[-1], snf.CosineClassifier)
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
    config = {"optimizer": "adam", "learning_rate": 0.01, "loss": loss,
              "temperature": 0.1, "architecture": "digits", "projection_head": True}
    fitted = snf.compile_embedding(base, config, num_classes=7)
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


def test_cosine_classifier_round_trips_its_settings():
    layer = snf.CosineClassifier.from_config(
        snf.CosineClassifier(num_classes=9, temperature=0.2).get_config())
    assert (layer.num_classes, layer.temperature) == (9, 0.2)


def test_unknown_mining_raises():
    with pytest.raises(ValueError, match="mining"):
        snf.TripletLoss(mining="easy")


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


# --- Koch et al.'s weighted-L1 + sigmoid head ------------------------------------------

def test_l1_head_output_matches_numpy_and_metrics_dissimilarity():
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
    alpha, bias = snf.l1_head(model)
    np.testing.assert_allclose(metrics.dissimilarity(ea, eb, (alpha, bias)), 1 - expected,
                               rtol=1e-4, atol=1e-6)


def test_l1_head_is_absent_from_euclidean_models():
    model, _ = build_siamese_model((8, 8, 1), "digits")
    assert snf.l1_head(model) is None


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
    model, _ = build_siamese_model((8, 8, 1), "digits", distance="l1_sigmoid")
    snf.compile_model(model, {"distance": "l1_sigmoid", "optimizer": "adam",
                              "learning_rate": 0.001, "margin": 1.0})
    p = np.array([[0.99]], np.float32)
    genuine = float(model.loss(np.array([[1.0]]), p))
    impostor = float(model.loss(np.array([[0.0]]), p))
    np.testing.assert_allclose(genuine, -np.log(0.99), rtol=1e-3)
    np.testing.assert_allclose(impostor, -np.log(0.01), rtol=1e-2)


def test_koch_architecture_follows_the_paper():
    base = snf.build_base_network((105, 105, 1), **ARCHITECTURES["koch"])
    convs = [l for l in base.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [
        (64, (10, 10)), (128, (7, 7)), (128, (4, 4)), (256, (4, 4))]
    assert len([l for l in base.layers if isinstance(l, keras.layers.MaxPooling2D)]) == 3
    assert base.output_shape == (None, 4096)
    kernel, bias = convs[0].get_weights()
    assert abs(kernel.std() - 1e-2) < 2e-3 and abs(bias.mean() - 0.5) < 5e-3
    dense_kernel, dense_bias = base.layers[-1].get_weights()
    assert abs(dense_kernel.std() - 0.2) < 0.01 and abs(dense_bias.mean() - 0.5) < 5e-3


@pytest.mark.parametrize("config, rule", [
    (dict(distance="euclidean", loss="contrastive", margin=1.0), "rule d < margin/2 = 0.5"),
    (dict(distance="euclidean", loss="contrastive", margin=2.0), "rule d < margin/2 = 1"),
    (dict(distance="l1_sigmoid", loss="bce", margin=1.0), "rule p(same) > 0.5"),
])
def test_fixed_rule_states_the_seeds_threshold(config, rule):
    assert snf.fixed_rule(config) == rule


@pytest.mark.parametrize("loss", ["triplet", "supcon", "normsoftmax"])
def test_fixed_rule_says_when_the_loss_never_trained_toward_it(loss):
    rule = snf.fixed_rule(dict(distance="euclidean", loss=loss,
                                                 margin=1.0))
    assert rule.startswith("rule d < margin/2 = 0.5")
    assert f"{loss} loss does not train toward it" in rule


def test_fixed_rule_says_when_a_projection_head_stood_between():
    rule = snf.fixed_rule(dict(distance="euclidean", loss="contrastive", margin=1.0,
                               projection_head=True))
    assert rule.startswith("rule d < margin/2 = 0.5") and "projection head" in rule
