"""The Siamese network: a shared-weight CNN base, a distance layer, losses and metrics.

Custom pieces are registered Keras objects (no Lambda layers), so a saved model
(`model.keras`, or the architecture JSON plus `.weights.h5`) reloads in a fresh process
with safe mode on, once this module is imported.
"""
import tf_setup  # noqa: F401  (must come before keras)
import keras
from keras import layers, ops

PACKAGE = "siamese"

# Base networks as data: conv = [(filters, kernel, max-pool after?)], then Dense layers.
ARCHITECTURES = {
    # Seed 001 (AT&T faces): conv 6 -> 12, Dense 128 -> 50.
    "att_faces": dict(conv=[(6, 3, True), (12, 3, True)], conv_dropout=0.25,
                      dense=[128], dense_dropout=0.1, embedding_dim=50),
    # Seed 000 (PlantVillage): conv 16 -> 32 -> 16, Dense 128 -> 50.
    "plantvillage": dict(conv=[(16, 3, True), (32, 3, True), (16, 3, True)],
                         conv_dropout=0.25, dense=[128], dense_dropout=0.1,
                         embedding_dim=50),
    # Seed 003 (Fruits-360): Koch's four conv layers, Dense 4096 sigmoid.
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
    # The offline default on 8x8 digits.
    "digits": dict(conv=[(32, 3, True), (64, 3, True)], padding="same",
                   batch_norm=True, dense=[128], embedding_dim=50,
                   embedding_activation=None),
    # A general base for your own folders (any size from about 32x32 up).
    "compact": dict(conv=[(32, 3, True), (64, 3, True), (128, 3, True), (128, 3, True)],
                    padding="same", batch_norm=True, global_pool=True,
                    embedding_dim=128, embedding_activation=None),
}


def build_base_network(input_shape, conv, dense=(), embedding_dim=50,
                       embedding_activation="relu", activation="relu", padding="valid",
                       pool="max", batch_norm=False, input_batch_norm=False,
                       conv_dropout=0.0, dense_dropout=0.0, global_pool=False,
                       name="embedding"):
    """The CNN both images go through: pixels in [0, 255] -> an embedding vector."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    if input_batch_norm:
        x = layers.BatchNormalization()(x)
    for filters, kernel, pool_after in conv:
        x = layers.Conv2D(filters, kernel, padding=padding, use_bias=not batch_norm)(x)
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
    outputs = layers.Dense(embedding_dim, activation=embedding_activation)(x)
    return keras.Model(inputs, outputs, name=name)


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


def build_siamese_model(input_shape, architecture="att_faces", name="siamese"):
    """Two image inputs -> one shared base network -> Euclidean distance (batch, 1).

    Returns (model, base); `base` maps one image to its embedding.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not one of "
                         f"{', '.join(ARCHITECTURES)}")
    base = build_base_network(input_shape, **ARCHITECTURES[architecture])
    image_a = keras.Input(shape=input_shape, name="image_a")
    image_b = keras.Input(shape=input_shape, name="image_b")
    distance = EuclideanDistance(name="distance")([base(image_a), base(image_b)])
    return keras.Model([image_a, image_b], distance, name=name), base


def make_optimizer(name, learning_rate):
    optimizers = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
                  "sgd": keras.optimizers.SGD}
    if name not in optimizers:
        raise ValueError(f"optimizer={name!r} is not one of {', '.join(optimizers)}")
    return optimizers[name](learning_rate=learning_rate)


def compile_model(model, config):
    """Compile with the configured loss, optimizer and the seed's accuracy at margin/2."""
    model.compile(optimizer=make_optimizer(config["optimizer"], config["learning_rate"]),
                  loss=ContrastiveLoss(margin=config["margin"]),
                  metrics=[DistanceAccuracy(threshold=config["margin"] / 2)])
    return model
