"""The Siamese network: a shared-weight CNN base, a distance layer, losses and metrics.

Custom pieces are registered Keras objects (no Lambda layers), so a saved model
(`model.keras`, or the architecture JSON plus `.weights.h5`) reloads in a fresh process
with safe mode on, once this module is imported.
"""
import tf_setup  # noqa: F401  (must come before keras)
import keras
from keras import layers, ops

PACKAGE = "siamese"
HEAD_LAYER = "similarity"  # the Dense sigmoid of the weighted-L1 head
EMBEDDING_ACTIVATION = "relu"  # of the embedding layer, where an architecture sets none

# Base networks as data: conv = [(filters, kernel, max-pool after?)], then Dense layers.
ARCHITECTURES = {
    # The AT&T faces tutorial: conv 6 -> 12, Dense 128 -> 50.
    "att_faces": dict(conv=[(6, 3, True), (12, 3, True)], conv_dropout=0.25,
                      dense=[128], dense_dropout=0.1, embedding_dim=50),
    # The PlantVillage project: conv 16 -> 32 -> 16, Dense 128 -> 50.
    "plantvillage": dict(conv=[(16, 3, True), (32, 3, True), (16, 3, True)],
                         conv_dropout=0.25, dense=[128], dense_dropout=0.1,
                         embedding_dim=50),
    # Koch et al. 2015 as published, for 105x105 input: conv 64@10x10, 128@7x7,
    # 128@4x4 (each max-pooled), 256@4x4, Dense 4096 sigmoid, the paper's initialisation.
    "koch": dict(conv=[(64, 10, True), (128, 7, True), (128, 4, True), (256, 4, False)],
                 embedding_dim=4096, embedding_activation="sigmoid", koch_init=True),
    # The Fruits-360 walkthrough: Koch's four conv layers, Dense 4096 sigmoid.
    "fruits360": dict(conv=[(64, 10, True), (128, 7, True), (128, 4, True),
                            (256, 4, False)],
                      embedding_dim=4096, embedding_activation="sigmoid"),
    # keras.io's siamese contrastive example (MNIST): tanh convs, average pooling.
    "mnist": dict(conv=[(4, 5, True), (16, 5, True)], activation="tanh", pool="avg",
                  input_batch_norm=True, embedding_dim=10, embedding_activation="tanh"),
    # A compact CPU-friendly base for Omniglot-sized drawings.
    "omniglot": dict(conv=[(32, 3, True), (64, 3, True), (64, 3, True), (128, 3, True)],
                     padding="same", batch_norm=True, global_pool=True,
                     embedding_dim=128, embedding_activation=None),
    # Faces at about 56x46: three BatchNorm conv blocks, flattened so the embedding keeps
    # where features are (faces are aligned), a linear 64-d embedding. Dropout 0.25 after
    # each block: with 22 training people to learn from, it carried over to the
    # validation people better than 0.1 (README, Results).
    "faces": dict(conv=[(32, 3, True), (64, 3, True), (128, 3, True)], padding="same",
                  batch_norm=True, conv_dropout=0.25, embedding_dim=64,
                  embedding_activation=None),
    # The offline default on 8x8 digits.
    "digits": dict(conv=[(32, 3, True), (64, 3, True)], padding="same",
                   batch_norm=True, dense=[128], embedding_dim=50,
                   embedding_activation=None),
    # A general base for your own folders (any size from about 32x32 up).
    "compact": dict(conv=[(32, 3, True), (64, 3, True), (128, 3, True), (128, 3, True)],
                    padding="same", batch_norm=True, global_pool=True,
                    embedding_dim=128, embedding_activation=None),
}
# The faces base at half the width, with its dropout of the time (the att_faces_oneshot
# preset's until it was widened): 2.3-2.5x faster per training step, 0.6 points lower on
# the AT&T validation people (README, Results).
ARCHITECTURES["faces_small"] = dict(ARCHITECTURES["faces"], conv_dropout=0.1,
                                    conv=[(16, 3, True), (32, 3, True), (64, 3, True)])


def build_base_network(input_shape, conv, dense=(), embedding_dim=50,
                       embedding_activation=EMBEDDING_ACTIVATION, activation="relu",
                       padding="valid", pool="max", batch_norm=False, input_batch_norm=False,
                       conv_dropout=0.0, dense_dropout=0.0, global_pool=False,
                       normalize=False, koch_init=False, projection_head=False,
                       name="embedding"):
    """The CNN both images go through: pixels in [0, 255] -> an embedding vector.

    projection_head: end at the features under the embedding layer (see
    add_projection_head, which puts that layer back on top for training).

    koch_init: Koch et al.'s initialisation, conv weights N(0, 0.01), dense weights
    N(0, 0.2), biases N(0.5, 0.01); otherwise Keras' defaults (Glorot uniform, zeros).
    """
    init = keras.initializers
    conv_init = (dict(kernel_initializer=init.RandomNormal(0.0, 1e-2),
                      bias_initializer=init.RandomNormal(0.5, 1e-2))
                 if koch_init else {})
    dense_init = (dict(kernel_initializer=init.RandomNormal(0.0, 2e-1),
                       bias_initializer=init.RandomNormal(0.5, 1e-2))
                  if koch_init else {})
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    if input_batch_norm:
        x = layers.BatchNormalization()(x)
    for filters, kernel, pool_after in conv:
        x = layers.Conv2D(filters, kernel, padding=padding, use_bias=not batch_norm,
                          **conv_init)(x)
        if batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation(activation)(x)
        if pool_after:
            x = (layers.MaxPooling2D(2) if pool == "max" else layers.AveragePooling2D(2))(x)
        if conv_dropout:
            x = layers.Dropout(conv_dropout)(x)
    x = layers.GlobalAveragePooling2D()(x) if global_pool else layers.Flatten()(x)
    for units in dense:
        x = layers.Dense(units, activation="relu")(x)
        if dense_dropout:
            x = layers.Dropout(dense_dropout)(x)
    outputs = x if projection_head else layers.Dense(
        embedding_dim, activation=embedding_activation, **dense_init)(x)
    if normalize:
        outputs = L2Normalize(name="l2_normalize")(outputs)
    return keras.Model(inputs, outputs, name=name)


def smallest_input(conv, padding="valid", **other_settings):
    """The smallest height (and width) a base network accepts: each "valid" convolution
    takes kernel - 1 pixels off, each pooling halves (rounding down)."""
    size = 1
    for _filters, kernel, pool_after in reversed(conv):
        size = 2 * size if pool_after else size
        size += kernel - 1 if padding == "valid" else 0
    return size


@keras.saving.register_keras_serializable(package=PACKAGE)
class EuclideanDistance(layers.Layer):
    """||a - b||_2 per row, shape (batch, 1).

    sqrt(max(sum, epsilon)) keeps the gradient finite when a pair's distance is zero.
    """

    def __init__(self, epsilon=1e-7, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        a, b = inputs
        squared = ops.sum(ops.square(a - b), axis=-1, keepdims=True)
        return ops.sqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AbsoluteDifference(layers.Layer):
    """|a - b| per feature, (batch, D): the input of Koch et al.'s weighted-L1 head."""

    def call(self, inputs):
        a, b = inputs
        return ops.abs(a - b)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


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


# --- in-batch losses: one forward pass of a P x K batch scores all its pairs ------------

@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Normalize(layers.Layer):
    """Scale each embedding to unit length (FaceNet), so distances lie in [0, 2]."""

    def call(self, inputs):
        return inputs / ops.sqrt(ops.maximum(ops.sum(ops.square(inputs), axis=-1,
                                                     keepdims=True), 1e-12))


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


MINING = ("semi_hard", "hard", "all")


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


def conv_dropout_rate(architecture, conv_dropout=None):
    """The dropout rate after each conv block: `conv_dropout`, or the architecture's own."""
    if conv_dropout is None:
        return ARCHITECTURES[architecture].get("conv_dropout", 0.0)
    return conv_dropout


def build_siamese_model(input_shape, architecture="att_faces", normalize=False,
                        distance="euclidean", projection_head=False, conv_dropout=None,
                        name="siamese"):
    """Two image inputs -> one shared base network -> the pair's output (batch, 1):
    distance="euclidean": the Euclidean distance of the two embeddings;
    distance="l1_sigmoid": Koch et al.'s p(same) = sigmoid(sum_j alpha_j |a_j - b_j| + b).
    conv_dropout: the dropout rate after each conv block, instead of the architecture's.

    Returns (model, base); `base` maps one image to its embedding (of unit length with
    `normalize`). Training `base` alone (in-batch losses) trains `model` too. With
    `projection_head`, `base` ends below the embedding layer (add_projection_head).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not one of "
                         f"{', '.join(ARCHITECTURES)}")
    smallest = smallest_input(**ARCHITECTURES[architecture])
    if min(input_shape[:2]) < smallest:
        raise ValueError(f"images of {input_shape[0]}x{input_shape[1]} pixels are too "
                         f"small for architecture={architecture!r}, which needs at least "
                         f"{smallest}x{smallest}: set a larger --image_size (or a smaller "
                         f"--downsample), or choose another --architecture")
    settings = dict(ARCHITECTURES[architecture],
                    conv_dropout=conv_dropout_rate(architecture, conv_dropout))
    base = build_base_network(input_shape, normalize=normalize,
                              projection_head=projection_head, **settings)
    image_a = keras.Input(shape=input_shape, name="image_a")
    image_b = keras.Input(shape=input_shape, name="image_b")
    embeddings = [base(image_a), base(image_b)]
    if distance == "l1_sigmoid":
        output = layers.Dense(1, activation="sigmoid", name=HEAD_LAYER)(
            AbsoluteDifference(name="l1_difference")(embeddings))
    else:
        output = EuclideanDistance(name="distance")(embeddings)
    return keras.Model([image_a, image_b], output, name=name), base


def add_projection_head(base, architecture):
    """The base network with its architecture's embedding layer on top, as a projection
    head (Chen et al. 2020, SimCLR; Khosla et al. 2020, supervised contrastive): the
    loss trains through it, and the features under it, which can carry over to unseen
    classes better, are what evaluation and inference compare. Unit-length output."""
    settings = ARCHITECTURES[architecture]
    activation = settings.get("embedding_activation", EMBEDDING_ACTIVATION)
    projected = layers.Dense(settings["embedding_dim"], activation=activation,
                             name="projection")(base.output)
    return keras.Model(base.input, L2Normalize(name="projection_l2_normalize")(projected),
                       name="projected_embedding")


def l1_head(model):
    """(alpha (D,), bias) of a model's weighted-L1 head, or None for Euclidean models:
    what metrics.dissimilarity needs to score embeddings without the pair network."""
    try:
        kernel, bias = model.get_layer(HEAD_LAYER).get_weights()
    except ValueError:
        return None
    return kernel[:, 0], float(bias[0])


def fixed_threshold(config):
    """The write-ups' decision rule as a dissimilarity threshold (see metrics.dissimilarity):
    d < margin/2 for Euclidean models, p > 0.5 (1 - p < 0.5) for the weighted-L1 head."""
    return 0.5 if config["distance"] == "l1_sigmoid" else config["margin"] / 2


def fixed_rule_applies(config):
    """Whether the run's loss trained toward fixed_threshold: Koch's head toward
    p = 0.5, the contrastive loss toward margin/2 on the features compared; not
    triplet, supcon or normsoftmax (unit vectors placed with no threshold in mind),
    nor a loss applied above a projection head."""
    if config["distance"] == "l1_sigmoid":
        return True
    return config["loss"] == "contrastive" and not config.get("projection_head")


def fixed_rule(config):
    """fixed_threshold in words, saying why when the run's loss never trained toward
    it (fixed_rule_applies)."""
    if config["distance"] == "l1_sigmoid":
        return "rule p(same) > 0.5"
    rule = f"rule d < margin/2 = {fixed_threshold(config):g}"
    if fixed_rule_applies(config):
        return rule
    if config.get("projection_head"):
        return f"{rule} (the loss saw the projection head's output, not these features)"
    return f"{rule} (contrastive; {config['loss']} loss does not train toward it)"


def make_optimizer(name, learning_rate, weight_decay=0.0):
    """The named Keras optimizer; weight_decay > 0 adds decoupled weight decay (Keras
    shrinks each variable by learning rate x weight_decay per step, as AdamW) on the
    kernels only, the common practice: biases and batch-norm scales and offsets are few
    and decaying them does not regularise the network, it only shrinks its outputs."""
    optimizers = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
                  "sgd": keras.optimizers.SGD}
    if name not in optimizers:
        raise ValueError(f"optimizer={name!r} is not one of {', '.join(optimizers)}")
    optimizer = optimizers[name](learning_rate=learning_rate,
                                 weight_decay=weight_decay or None)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def learning_rate(config, steps_per_epoch):
    """config["learning_rate"], or for lr_schedule="cosine" a schedule that lowers it
    along a half cosine to 0 at the end of the last epoch (Loshchilov & Hutter 2017),
    so the final epochs take small, steady steps instead of wandering around a minimum."""
    if config.get("lr_schedule") == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config["learning_rate"], decay_steps=steps_per_epoch * config["epochs"])
    return config["learning_rate"]


def configured_optimizer(config, steps_per_epoch):
    """The config's optimizer with its learning rate (or schedule) and weight decay."""
    return make_optimizer(config["optimizer"], learning_rate(config, steps_per_epoch),
                          config.get("weight_decay", 0.0))


def compile_model(model, config, steps_per_epoch=1):
    """Compile the pair model (pairing="pairs"): contrastive loss with the write-ups'
    accuracy at d < margin/2, or for the weighted-L1 head binary cross-entropy (y = 1
    genuine) with accuracy at p > 0.5."""
    if config["distance"] == "l1_sigmoid":
        loss = keras.losses.BinaryCrossentropy()
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.5)
    else:
        loss = ContrastiveLoss(margin=config["margin"])
        accuracy = DistanceAccuracy(threshold=fixed_threshold(config))
    optimizer = configured_optimizer(config, steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy],
                  jit_compile=config.get("jit_compile", False))
    return model


def compile_embedding(base, config, steps_per_epoch=1, num_classes=0):
    """Compile what fits the base network (pairing="batch") on (images, class labels)
    batches, and return it: the base itself with an in-batch loss (triplet, supcon,
    contrastive), or for loss="normsoftmax" the base with a CosineClassifier over the
    `num_classes` class labels on top, trained with cross-entropy; with
    config["projection_head"], a projection head (add_projection_head) in between."""
    fitted = (add_projection_head(base, config["architecture"])
              if config.get("projection_head") else base)
    if config["loss"] == "triplet":
        loss = TripletLoss(margin=config["triplet_margin"], mining=config["mining"],
                           soft_margin=config.get("soft_margin", False))
    elif config["loss"] == "supcon":
        loss = SupConLoss(temperature=config["temperature"])
    elif config["loss"] == "normsoftmax":
        logits = CosineClassifier(num_classes, config["temperature"],
                                  name="class_logits")(fitted.output)
        fitted = keras.Model(base.input, logits, name="embedding_classifier")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = BatchContrastiveLoss(margin=config["margin"])
    optimizer = configured_optimizer(config, steps_per_epoch)
    fitted.compile(optimizer=optimizer, loss=loss,
                   jit_compile=config.get("jit_compile", False))
    return fitted
