"""The registered Keras layers of the networks: the pair outputs and unit-length
embeddings. Registered (no Lambda layers), so a saved model reloads in a fresh process
with safe mode on once this module is imported."""
import tf_setup  # noqa: F401  (must come before keras)
import keras
from keras import layers, ops

PACKAGE = "siamese"


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


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Normalize(layers.Layer):
    """Scale each embedding to unit length (FaceNet), so distances lie in [0, 2]."""

    def call(self, inputs):
        return inputs / ops.sqrt(ops.maximum(ops.sum(ops.square(inputs), axis=-1,
                                                     keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CaffePreprocess(layers.Layer):
    """RGB pixels in [0, 255] -> BGR minus ImageNet's mean per channel: the inputs
    ResNet50's weights were trained on (keras.applications.resnet50.preprocess_input)."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        return ops.flip(inputs, axis=-1) - ops.convert_to_tensor(self.MEAN_BGR,
                                                                  inputs.dtype)
