"""losses (the registry) and loss_functions (the Keras losses): each loss against a
loop-by-loop NumPy reference, and what the registry's traits decide."""
import numpy as np
import pytest

import keras
import tensorflow as tf
import loss_functions as lf
import losses
from loss_functions import ContrastiveLoss, DistanceAccuracy


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
    per_anchor = []
    for a in range(n):
        if mining == "hard":
            if positives(a) and negatives(a):
                hardest_p = max(d[a, p] for p in positives(a))
                hardest_n = min(d[a, k] for k in negatives(a))
                per_anchor.append(violation(hardest_p, hardest_n))
            continue
        for p in positives(a):
            if mining == "all":
                per_anchor += [violation(d[a, p], d[a, k]) for k in negatives(a)]
                continue
            farther = [d[a, k] for k in negatives(a) if d[a, k] > d[a, p]]
            chosen = min(farther) if farther else max(d[a, k] for k in negatives(a))
            per_anchor.append(violation(d[a, p], chosen))
    if mining == "all":
        per_anchor = [value for value in per_anchor if value > 0]
        return np.mean(per_anchor) if per_anchor else 0.0
    return np.mean(per_anchor)


def _small_batch(seed=0, classes=(0, 0, 0, 1, 1, 2, 2, 2), dim=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(classes), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(classes, np.int32)


def test_pairwise_distances_match_numpy_with_a_zero_diagonal():
    x, _ = _small_batch()
    d = np.asarray(lf.pairwise_distances(tf.constant(x)))
    np.testing.assert_allclose(d, _numpy_pairwise(x), atol=1e-5)
    assert np.all(np.diag(d) == 0)


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_batch_contrastive_loss_matches_numpy(margin):
    x, labels = _small_batch(seed=1)
    loss = lf.BatchContrastiveLoss(margin=margin)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_batch_contrastive(x, labels, margin),
                               rtol=1e-5)


@pytest.mark.parametrize("mining", ["semi_hard", "hard", "all"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_loss_matches_numpy_for_each_mining(mining, seed):
    x, labels = _small_batch(seed=seed)
    loss = lf.TripletLoss(margin=0.3, mining=mining)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_triplet(x, labels, 0.3, mining),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mining", ["semi_hard", "hard", "all"])
def test_soft_margin_triplet_loss_matches_numpy_for_each_mining(mining):
    x, labels = _small_batch(seed=3)
    loss = lf.TripletLoss(margin=0.3, mining=mining, soft_margin=True)(labels, x)
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
            loss = lf.TripletLoss(mining="hard", soft_margin=soft_margin)(labels, x)
        gradient = tape.gradient(loss, x)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert (np.abs(gradient.numpy()).sum() > 0) == soft_margin


def test_triplet_mining_modes_differ_on_a_hand_made_batch():
    # Anchor 0 with positive 1 (d = 0.2) and negatives at 0.25 (semi-hard: farther than
    # the positive, inside the margin) and 0.05 (hard: closer than the positive).
    x = np.array([[0.0], [0.2], [0.25], [0.05]], np.float32)
    labels = np.array([0, 0, 1, 1], np.int32)
    by_mining = {m: float(lf.TripletLoss(margin=0.1, mining=m)(labels, x))
                 for m in ("semi_hard", "hard", "all")}
    for mining, value in by_mining.items():
        np.testing.assert_allclose(value, _numpy_triplet(x, labels, 0.1, mining),
                                   rtol=1e-5)
    # anchor 0, positive 1: semi-hard picks 0.25 -> 0.2 - 0.25 + 0.1 = 0.05
    assert len(set(by_mining.values())) == 3, by_mining


def test_triplet_loss_is_zero_when_classes_are_far_apart():
    x = np.array([[0.0, 0.0], [0.01, 0.0], [5.0, 0.0], [5.01, 0.0]], np.float32)
    labels = np.array([1, 1, 0, 0], np.int32)
    for mining in ("semi_hard", "hard", "all"):
        assert float(lf.TripletLoss(margin=0.2, mining=mining)(labels, x)) == 0.0


def test_genuine_label_convention_of_the_batch_losses():
    # Two identical embeddings: as one class (genuine) the loss is 0, as two classes
    # (impostor) it is the full margin^2 penalty.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], np.float32)
    together = float(lf.BatchContrastiveLoss(margin=1.0)([7, 7, 3], x))
    apart = float(lf.BatchContrastiveLoss(margin=1.0)([7, 8, 3], x))
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
    loss = lf.SupConLoss(temperature=temperature)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_supcon(x, labels, temperature),
                               rtol=1e-5)


def test_supcon_loss_prefers_classes_that_cluster():
    # the same four points, labelled by the clusters (genuine pairs close) or across them
    x = np.array([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0], [-0.99, 0.14]], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clustered = float(lf.SupConLoss()(np.array([1, 1, 0, 0]), x))
    crossed = float(lf.SupConLoss()(np.array([1, 0, 1, 0]), x))
    assert clustered < 0.01 < 10.0 < crossed


def test_supcon_loss_round_trips_its_temperature():
    loss = lf.SupConLoss.from_config(lf.SupConLoss(temperature=0.3).get_config())
    assert loss.temperature == 0.3


def test_cosine_classifier_logits_match_numpy():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(6, 4)).astype(np.float32)
    layer = lf.CosineClassifier(num_classes=3, temperature=0.05)
    logits = keras.ops.convert_to_numpy(layer(embeddings))
    vectors = keras.ops.convert_to_numpy(layer.class_vectors)
    expected = ((embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
                @ (vectors / np.linalg.norm(vectors, axis=0, keepdims=True)) / 0.05)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits.shape == (6, 3) and np.abs(logits).max() <= 1 / 0.05 + 1e-4


def test_cosine_classifier_round_trips_its_settings():
    layer = lf.CosineClassifier.from_config(
        lf.CosineClassifier(num_classes=9, temperature=0.2).get_config())
    assert (layer.num_classes, layer.temperature) == (9, 0.2)


def test_unknown_mining_raises():
    with pytest.raises(ValueError, match="mining"):
        lf.TripletLoss(mining="easy")


@pytest.mark.parametrize("config, rule", [
    (dict(distance="euclidean", loss="contrastive", margin=1.0), "rule d < margin/2 = 0.5"),
    (dict(distance="euclidean", loss="contrastive", margin=2.0), "rule d < margin/2 = 1"),
    (dict(distance="l1_sigmoid", loss="bce", margin=1.0), "rule p(same) > 0.5"),
])
def test_fixed_rule_states_the_seeds_threshold(config, rule):
    assert losses.fixed_rule(config) == rule


@pytest.mark.parametrize("loss", ["triplet", "supcon", "normsoftmax"])
def test_fixed_rule_says_when_the_loss_never_trained_toward_it(loss):
    rule = losses.fixed_rule(dict(distance="euclidean", loss=loss, margin=1.0))
    assert rule.startswith("rule d < margin/2 = 0.5")
    assert f"{loss} loss does not train toward it" in rule


def test_fixed_rule_says_when_a_projection_head_stood_between():
    rule = losses.fixed_rule(dict(distance="euclidean", loss="contrastive", margin=1.0,
                               projection_head=True))
    assert rule.startswith("rule d < margin/2 = 0.5") and "projection head" in rule


def _numpy_prototypical(x, labels, shots):
    """Snell et al.'s episode loss, image by image: each class's first `shots` images
    (in batch order) average into its prototype; every other image is a query."""
    classes = list(dict.fromkeys(labels.tolist()))
    support = {c: [i for i in range(len(x)) if labels[i] == c][:shots] for c in classes}
    prototypes = np.array([x[support[c]].mean(axis=0) for c in classes])
    per_query = []
    for i in range(len(x)):
        if i in support[labels[i]]:
            continue
        logits = -np.sum((x[i] - prototypes) ** 2, axis=1)
        log_p = logits - np.log(np.sum(np.exp(logits)))
        per_query.append(-log_p[classes.index(labels[i])])
    return np.mean(per_query)


@pytest.mark.parametrize("shots", [1, 2])
@pytest.mark.parametrize("classes", [(0, 0, 0, 1, 1, 1, 2, 2, 2), (5, 3, 5, 3, 5, 3, 9, 9, 9)])
def test_prototypical_loss_matches_numpy(shots, classes):
    # Raw (not unit) embeddings, as the loss trains them; the second batch interleaves
    # its classes, so "first images" means first in batch order, not a block.
    rng = np.random.default_rng(shots)
    x = rng.normal(size=(len(classes), 4)).astype(np.float32)
    labels = np.array(classes, np.int32)
    loss = lf.PrototypicalLoss(shots=shots)(labels, x)
    np.testing.assert_allclose(float(loss), _numpy_prototypical(x, labels, shots),
                               rtol=1e-5)


def test_prototypical_loss_is_small_when_queries_sit_on_their_prototype():
    # Supports x0 and x1 (the first of each class); queries x2 and x3 sit 0.1 from
    # their own prototype and 4.9 from the other, or the other way round.
    x = np.array([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.1, 0.0]], np.float32)
    together = float(lf.PrototypicalLoss(shots=1)(np.array([1, 0, 1, 0]), x))
    crossed = float(lf.PrototypicalLoss(shots=1)(np.array([1, 0, 0, 1]), x))
    assert together < 1e-6 and crossed > 20.0


def test_prototypical_loss_round_trips_its_shots():
    loss = lf.PrototypicalLoss.from_config(lf.PrototypicalLoss(shots=3).get_config())
    assert loss.shots == 3


# --- the registry ------------------------------------------------------------------

def _config(**settings):
    from configurator import get_config
    return get_config(dataset="digits", **settings)


@pytest.mark.parametrize("settings, loss_class", [
    (dict(), lf.ContrastiveLoss),
    (dict(pairing="batch", split="classes"), lf.BatchContrastiveLoss),
    (dict(distance="l1_sigmoid", loss="bce"), keras.losses.BinaryCrossentropy),
    (dict(pairing="batch", loss="triplet"), lf.TripletLoss),
    (dict(pairing="batch", loss="supcon"), lf.SupConLoss),
    (dict(pairing="batch", loss="prototypical"), lf.PrototypicalLoss),
    (dict(pairing="batch", loss="normsoftmax", monitor="val_oneshot"),
     keras.losses.SparseCategoricalCrossentropy),
])
def test_every_registered_loss_builds_from_its_settings(settings, loss_class):
    config = _config(**settings)
    inputs = keras.Input((3,))
    network = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    fitted, loss, pair_metrics = losses.build(config, network, num_classes=5)
    assert isinstance(loss, loss_class)
    assert (fitted is network) == (config["loss"] != "normsoftmax")
    # Pair models report accuracy at the fixed rule; in-batch losses report none.
    assert len(pair_metrics) == (config["pairing"] == "pairs")


def test_every_loss_names_only_settings_that_exist():
    from configurator import defaults
    for name, spec in losses.LOSSES.items():
        assert set(spec.settings) <= set(defaults()), name
        assert set(spec.pairings) <= {"pairs", "batch"}, name


@pytest.mark.parametrize("settings, message", [
    (dict(distance="l1_sigmoid"), "Koch's head goes with cross-entropy"),
    (dict(loss="bce"), "Koch's head goes with cross-entropy"),
    (dict(distance="l1_sigmoid", loss="bce", pairing="batch"), "--pairing=pairs"),
    (dict(loss="supcon"), "add --pairing=batch"),
    (dict(loss="prototypical"), "add --pairing=batch"),
    (dict(loss="normsoftmax", pairing="batch"), "--monitor=val_oneshot"),
    (dict(loss="prototypical", pairing="batch", prototype_shots=4),
     "--images_per_class=5 or more"),
    (dict(loss="prototypical", pairing="batch", prototype_shots=0),
     "prototype_shots must be 1 or more"),
])
def test_a_loss_that_cannot_train_with_the_settings_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        _config(**settings)


@pytest.mark.parametrize("settings, unit", [
    (dict(), False), (dict(normalize=True), True),
    (dict(pairing="batch", loss="triplet"), True),
    (dict(pairing="batch", loss="prototypical"), False),  # Snell: raw embeddings
])
def test_unit_embeddings_follow_the_loss_or_the_setting(settings, unit):
    assert losses.unit_embeddings(_config(**settings)) is unit


def test_describe_names_the_loss_and_the_settings_it_reads():
    config = _config(pairing="batch", loss="triplet", mining="hard", soft_margin=True)
    assert losses.describe(config) == ("triplet loss (mining=hard, triplet_margin=0.2, "
                                       "soft_margin=True)")
    assert losses.describe(_config(distance="l1_sigmoid", loss="bce")) == "bce loss"
