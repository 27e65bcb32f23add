"""The Keras losses (and the pair-accuracy metric) the project trains with. Which
loss a run uses, what it needs and how it is built: losses.LOSSES.

Registered Keras objects, so a compiled model saved with one reloads with safe mode on.
"""
import tf_setup  # noqa: F401  (must come before keras)
import keras
from keras import layers, ops

from losses import MINING
from network_layers import PACKAGE


def _labels_like(y_true, y_pred):
    """Labels as y_pred's dtype and shape, so (batch,) never broadcasts to (batch, batch)."""
    return ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContrastiveLoss(keras.losses.Loss):
    """Hadsell et al. 2006: mean of y*d^2 + (1-y)*max(margin - d, 0)^2, y = 1 genuine."""

    def __init__(self, margin=1.0, name="contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        y = _labels_like(y_true, y_pred)
        impostor_term = ops.square(ops.maximum(self.margin - y_pred, 0.0))
        return y * ops.square(y_pred) + (1.0 - y) * impostor_term

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DistanceAccuracy(keras.metrics.MeanMetricWrapper):
    """Share of pairs judged right when "same" means distance < threshold."""

    def __init__(self, threshold=0.5, name="accuracy", dtype=None):
        super().__init__(self.correct, name=name, dtype=dtype)
        self.threshold = threshold

    def correct(self, y_true, y_pred):
        y = _labels_like(y_true, y_pred)
        predicted_same = ops.cast(y_pred < self.threshold, y_pred.dtype)
        return ops.cast(ops.equal(predicted_same, y), y_pred.dtype)

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}


# --- in-batch losses: one forward pass of a P x K batch scores all its pairs ---------

def pairwise_distances(embeddings):
    """Euclidean distance between every two rows: (B, D) -> (B, B), zero diagonal."""
    squared = ops.sum(ops.square(embeddings), axis=1)
    gram = ops.matmul(embeddings, ops.transpose(embeddings))
    d2 = ops.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0)
    off_diagonal = 1.0 - ops.eye(ops.shape(embeddings)[0], dtype=embeddings.dtype)
    return ops.sqrt(ops.maximum(d2, 1e-12)) * off_diagonal


def _label_masks(y_true, embeddings):
    """(same class, i != j) and (different class) masks as floats, (B, B) each."""
    labels = ops.reshape(y_true, (-1,))
    same = ops.cast(ops.equal(labels[:, None], labels[None, :]), embeddings.dtype)
    not_self = 1.0 - ops.eye(ops.shape(labels)[0], dtype=embeddings.dtype)
    return same * not_self, 1.0 - same


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


class InBatchLoss(keras.losses.Loss):
    """A loss over every pair of a batch of (class label, embedding) rows; subclasses
    give it as batch_loss(labels, embeddings), a scalar.

    Under tf.distribute each replica holds a slice of the batch. The slices are
    gathered, so every image is still compared with every other (TensorFlow's
    all_gather hands each replica the gradient of its own rows), and the loss is
    divided by the replicas, as Keras does for per-image losses but not for a scalar,
    so that the gradients summed over replicas and the logged loss are those of one
    device.
    """

    def call(self, y_true, y_pred):
        replicas = 1
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync if context is not None else 1
            if replicas > 1:
                y_true = context.all_gather(y_true, axis=0)
                y_pred = context.all_gather(y_pred, axis=0)
        return self.batch_loss(y_true, y_pred) / replicas


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchContrastiveLoss(InBatchLoss):
    """Contrastive loss over every pair of a batch of (embedding, class label) rows.

    Genuine and impostor pairs are averaged separately and weighted equally, as in a
    balanced set of pairs: 0.5 * (mean d^2 over genuine + mean max(margin - d, 0)^2
    over impostor). y_true holds class labels here, not pair labels.
    """

    def __init__(self, margin=1.0, name="batch_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def batch_loss(self, y_true, y_pred):
        d = pairwise_distances(y_pred)
        genuine, impostor = _label_masks(y_true, y_pred)
        return 0.5 * (_masked_mean(ops.square(d), genuine) + _masked_mean(
            ops.square(ops.maximum(self.margin - d, 0.0)), impostor))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletLoss(InBatchLoss):
    """FaceNet's max(d(a, p) - d(a, n) + margin, 0) with triplets mined in the batch.

    mining="semi_hard": for every genuine (anchor, positive), the closest negative that
      is farther than the positive, or the farthest negative if none is (Schroff et al.
      2015, as tf-addons' TripletSemiHardLoss); mean over all (anchor, positive).
    mining="hard": per anchor, its farthest positive and closest negative (Hermans et
      al. 2017 "batch hard"); mean over anchors.
    mining="all": every valid triplet; mean over those with a positive loss.
    soft_margin: softplus(d(a, p) - d(a, n)) in place of the hinge (Hermans et al.
      2017), so triplets that already clear the margin keep pulling, just less.
    """

    def __init__(self, margin=0.2, mining="semi_hard", soft_margin=False,
                 name="triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if mining not in MINING:
            raise ValueError(f"mining={mining!r} is not one of {', '.join(MINING)}")
        self.margin = margin
        self.mining = mining
        self.soft_margin = soft_margin

    def _violation(self, d_ap, d_an):
        if self.soft_margin:
            return ops.softplus(d_ap - d_an)
        return ops.maximum(d_ap - d_an + self.margin, 0.0)

    def batch_loss(self, y_true, y_pred):
        d = pairwise_distances(y_pred)
        positive, negative = _label_masks(y_true, y_pred)
        big = ops.max(d) + 1.0
        if self.mining == "hard":
            hardest_positive = ops.max(d * positive, axis=1)
            hardest_negative = ops.min(d + big * (1.0 - negative), axis=1)
            valid = ops.cast((ops.sum(positive, axis=1) > 0)
                             & (ops.sum(negative, axis=1) > 0), d.dtype)
            losses = self._violation(hardest_positive, hardest_negative)
            return _masked_mean(losses, valid)
        # (anchor, positive, negative) cube: d[a, p] - d[a, n]
        d_ap, d_an = d[:, :, None], d[:, None, :]
        triplets = positive[:, :, None] * negative[:, None, :]
        if self.mining == "all":
            losses = self._violation(d_ap, d_an)
            return _masked_mean(losses, triplets * ops.cast(losses > 0, d.dtype))
        farther = triplets * ops.cast(d_an > d_ap, d.dtype)
        closest_farther = ops.min(d_an + big * (1.0 - farther), axis=2)
        farthest = ops.max(d_an * triplets, axis=2)
        chosen = ops.where(ops.sum(farther, axis=2) > 0, closest_farther, farthest)
        valid = positive * ops.cast(ops.sum(negative, axis=1, keepdims=True) > 0,
                                    d.dtype)
        return _masked_mean(self._violation(d, chosen), valid)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "mining": self.mining,
                "soft_margin": self.soft_margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SupConLoss(InBatchLoss):
    """Supervised contrastive loss (Khosla et al. 2020) over a batch of unit embeddings.

    Each image is a query that must pick out the other images of its class among all
    the others in the batch: softmax over the cosine similarities / temperature,
    -log p(positive) averaged over its positives, then over the images that have one.
    Every step is then many small one-shot tasks, the evaluation's own question.
    """

    def __init__(self, temperature=0.1, name="supcon_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = temperature

    def batch_loss(self, y_true, y_pred):
        logits = ops.matmul(y_pred, ops.transpose(y_pred)) / self.temperature
        positive, _ = _label_masks(y_true, y_pred)
        # an image never competes with itself: its own logit is pushed far below
        others = logits - 1e9 * ops.eye(ops.shape(logits)[0], dtype=logits.dtype)
        log_p = others - ops.logsumexp(others, axis=1, keepdims=True)
        positives = ops.sum(positive, axis=1)
        per_query = -ops.sum(log_p * positive, axis=1) / ops.maximum(positives, 1.0)
        return _masked_mean(per_query, ops.cast(positives > 0, logits.dtype))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PrototypicalLoss(InBatchLoss):
    """Prototypical networks (Snell et al. 2017) on a P x K batch as an episode.

    In each class the first `shots` images of the batch are its support: their mean
    embedding is the class prototype. Every other image is a query, scored by a
    softmax over minus its squared Euclidean distances to the batch's prototypes;
    the loss is -log p(own class), averaged over the queries. Trained with as many
    support images as the test gives (one, for one-shot), every step rehearses the
    N-way task itself.
    """

    def __init__(self, shots=1, name="prototypical_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.shots = shots

    def batch_loss(self, y_true, y_pred):
        labels = ops.reshape(y_true, (-1,))
        size = ops.shape(labels)[0]
        same = ops.cast(ops.equal(labels[:, None], labels[None, :]), y_pred.dtype)
        earlier = ops.tril(ops.ones((size, size), y_pred.dtype), k=-1)
        rank = ops.sum(same * earlier, axis=1)  # how many of its class come before it
        support = ops.cast(rank < self.shots, y_pred.dtype)
        # Row i: the mean of the support images of i's class, i.e. i's class prototype.
        members = same * support[None, :]
        prototypes = ops.matmul(members, y_pred) / ops.maximum(
            ops.sum(members, axis=1, keepdims=True), 1.0)
        # Each class's prototype counted once: in the column of its first image.
        first = ops.cast(rank == 0, y_pred.dtype)
        squared = (ops.sum(ops.square(y_pred), axis=1)[:, None]
                   + ops.sum(ops.square(prototypes), axis=1)[None, :]
                   - 2.0 * ops.matmul(y_pred, ops.transpose(prototypes)))
        logits = -squared - 1e9 * (1.0 - first)[None, :]
        log_p = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        per_query = -ops.sum(log_p * same * first[None, :], axis=1)
        return _masked_mean(per_query, 1.0 - support)

    def get_config(self):
        return {**super().get_config(), "shots": self.shots}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CosineClassifier(layers.Layer):
    """NormSoftmax's training head (Wang et al. 2017; Zhai & Wu 2019): one learned unit
    vector per training class, logits = cos(embedding, class vector) / temperature.

    Cross-entropy over these logits pulls every image towards its own class vector and
    away from all the others at once, not only from the few classes in its batch; only
    the base network is kept after training, so the class vectors never limit which
    classes the embedding can compare.
    """

    def __init__(self, num_classes, temperature=0.05, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.temperature = num_classes, temperature

    def build(self, input_shape):
        self.class_vectors = self.add_weight(
            shape=(input_shape[-1], self.num_classes), initializer="glorot_uniform",
            name="class_vectors")

    def call(self, embeddings):
        unit = ops.normalize(embeddings, axis=-1)
        return ops.matmul(unit, ops.normalize(self.class_vectors, axis=0)) / self.temperature

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "temperature": self.temperature}
