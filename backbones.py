"""Base networks: what turns one image into its embedding, by name (BACKBONES).

The registry is plain data, so configurator checks an `architecture` setting without
loading TensorFlow; keras is imported when a network is built.

Two kinds of entry:
- a conv stack: conv = [(filters, kernel, max-pool after?)], then Dense layers, then the
  embedding layer (see build_conv_stack for every key);
- a keras.applications model: application = its class name, preprocessing = what its
  inputs need ("built_in", or "caffe" for ResNet50), embedding_dim = the Dense
  embedding on its pooled features. Its weights: random, ImageNet's or a file
  (backbone_weights); its layers below a named one can be frozen (freeze_below).
"""
EMBEDDING_ACTIVATION = "relu"  # of the embedding layer, where an entry sets none

BACKBONES = {
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
    # validation people better than 0.1 (docs/experiments.md).
    "faces": dict(conv=[(32, 3, True), (64, 3, True), (128, 3, True)], padding="same",
                  batch_norm=True, conv_dropout=0.25, embedding_dim=64,
                  embedding_activation=None),
    # The offline digits preset's base, for 8x8 digits.
    "digits": dict(conv=[(32, 3, True), (64, 3, True)], padding="same",
                   batch_norm=True, dense=[128], embedding_dim=50,
                   embedding_activation=None),
    # A general base for your own folders (any size from about 32x32 up).
    "compact": dict(conv=[(32, 3, True), (64, 3, True), (128, 3, True), (128, 3, True)],
                    padding="same", batch_norm=True, global_pool=True,
                    embedding_dim=128, embedding_activation=None),
}
# keras.applications models (see build_application), at any size from 32x32 up.
APPLICATIONS = {
    "mobilenet_v3_small": dict(application="MobileNetV3Small", preprocessing="built_in",
                               embedding_dim=128, embedding_activation=None),
    "efficientnet_b0": dict(application="EfficientNetB0", preprocessing="built_in",
                            embedding_dim=128, embedding_activation=None),
    # keras.io's siamese_network example fine-tunes this one from conv5_block1_out up.
    "resnet50": dict(application="ResNet50", preprocessing="caffe", embedding_dim=128,
                     embedding_activation=None),
}
APPLICATION_SMALLEST = 32  # keras.applications refuse inputs under 32x32
# The faces base at half the width, with its dropout of the time (the att_faces_oneshot
# preset's until it was widened): 2.3-2.5x faster per training step, 0.6 points lower on
# the AT&T validation people (docs/experiments.md).
BACKBONES["faces_small"] = dict(BACKBONES["faces"], conv_dropout=0.1,
                                conv=[(16, 3, True), (32, 3, True), (64, 3, True)])
BACKBONES.update(APPLICATIONS)


def check_name(architecture):
    if architecture not in BACKBONES:
        raise ValueError(f"architecture={architecture!r} is not one of "
                         f"{', '.join(BACKBONES)}")


def conv_dropout_rate(architecture, conv_dropout=None):
    """The dropout rate after each conv block: `conv_dropout`, or the architecture's own;
    None for a keras.applications model, which has no such setting."""
    if is_application(architecture):
        return None
    if conv_dropout is None:
        return BACKBONES[architecture].get("conv_dropout", 0.0)
    return conv_dropout


def is_application(architecture):
    return "application" in BACKBONES[architecture]


def smallest_input(conv=(), padding="valid", application=None, **other_settings):
    """The smallest height (and width) a base network accepts: for a conv stack each
    "valid" convolution takes kernel - 1 pixels off, each pooling halves (rounding
    down)."""
    if application:
        return APPLICATION_SMALLEST
    size = 1
    for _filters, kernel, pool_after in reversed(conv):
        size = 2 * size if pool_after else size
        size += kernel - 1 if padding == "valid" else 0
    return size


def build(architecture, input_shape, normalize=False, projection_head=False,
          conv_dropout=None, weights="", freeze_below=""):
    """The base network `architecture` names, for images of `input_shape`: pixels in
    [0, 255] -> an embedding (of unit length with `normalize`). With
    `projection_head`, it ends at the features under the embedding layer
    (add_projection_head puts that layer back on top for training). conv_dropout:
    the rate after each conv block, instead of the architecture's own. weights and
    freeze_below: a keras.applications model's (build_application)."""
    check_name(architecture)
    settings = dict(BACKBONES[architecture])
    if not is_application(architecture):
        settings["conv_dropout"] = conv_dropout_rate(architecture, conv_dropout)
    smallest = smallest_input(**settings)
    if min(input_shape[:2]) < smallest:
        raise ValueError(f"images of {input_shape[0]}x{input_shape[1]} pixels are too "
                         f"small for architecture={architecture!r}, which needs at least "
                         f"{smallest}x{smallest}: set a larger --image_size (or a smaller "
                         f"--downsample), or choose another --architecture")
    if is_application(architecture):
        return build_application(input_shape, settings, normalize, projection_head,
                                 weights, freeze_below)
    return build_conv_stack(input_shape, normalize=normalize,
                            projection_head=projection_head, **settings)


def build_application(input_shape, settings, normalize=False, projection_head=False,
                      weights="", freeze_below=""):
    """A keras.applications model as the base network: pixels in [0, 255], grey images
    repeated to 3 channels, the model's own preprocessing, its convolutional part
    average-pooled, then a linear `embedding_dim` embedding.

    weights: "" for a random initialisation, "imagenet" for ImageNet's (downloaded
    once into ~/.keras/models), or the path of a weights file of the model without its
    classifier (e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5).
    freeze_below: the name of one of its layers; the layers before it keep their
    weights while the rest train (keras.io's example: ResNet50's "conv5_block1_out").
    """
    import keras
    from keras import layers

    from network_layers import CaffePreprocess

    name = settings["application"]
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs if input_shape[-1] == 3 else layers.Concatenate(name="grey_to_rgb")(
        [inputs] * 3)
    if settings["preprocessing"] == "caffe":
        x = CaffePreprocess(name="caffe_preprocess")(x)
    backbone = _load_application(name, (*input_shape[:2], 3), weights)
    if freeze_below:
        freeze_layers_below(backbone, freeze_below)
    x = backbone(x)
    outputs = _embedding(x, settings["embedding_dim"], settings["embedding_activation"],
                         normalize, projection_head, name="embedding_dense")
    return keras.Model(inputs, outputs, name="embedding")


def _embedding(features, embedding_dim, activation, normalize=False,
               projection_head=False, **dense_settings):
    """The embedding layer on `features` (left off with `projection_head`, see
    add_projection_head), scaled to unit length with `normalize`."""
    from keras import layers

    from network_layers import L2Normalize

    outputs = features if projection_head else layers.Dense(
        embedding_dim, activation=activation, **dense_settings)(features)
    if normalize:
        outputs = L2Normalize(name="l2_normalize")(outputs)
    return outputs


def _load_application(name, input_shape, weights):
    import keras

    model_class = getattr(keras.applications, name)
    try:
        return model_class(input_shape=input_shape, include_top=False, pooling="avg",
                           weights=weights or None)
    except (ValueError, OSError) as error:
        raise ValueError(f"backbone_weights={weights!r} cannot be loaded into {name} "
                         f"({str(error)[:200]}): give the file of {name}'s weights "
                         f"without its classifier (include_top=False)") from error
    except Exception as error:  # Keras wraps a failed download in a bare Exception
        if weights != "imagenet":
            raise
        raise ValueError(
            f"backbone_weights='imagenet': {name}'s ImageNet weights could not be "
            f"downloaded ({str(error)[:160]}). On a machine with internet, run python "
            f"-c \"import keras; keras.applications.{name}(include_top=False)\" and "
            f"copy ~/.keras/models/ here, then set --backbone_weights=PATH/TO/that .h5 "
            f"file; or train from scratch with --backbone_weights=''") from error


def freeze_layers_below(model, layer_name):
    """Set every layer of `model` before `layer_name` untrainable (the rest train)."""
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        close = [n for n in names if n.startswith(layer_name.split("_")[0])][:5]
        raise ValueError(f"freeze_below={layer_name!r} is no layer of {model.name}: "
                         f"name one of its layers (e.g. {', '.join(close or names[-3:])}), "
                         f"or '' to train them all")
    for layer in model.layers[:names.index(layer_name)]:
        layer.trainable = False


def training_bytes(architecture, input_shape, images):
    """A floor on the memory of one training step of `images` images of
    `input_shape` (H, W, C): the float32 input and each conv layer's output, which the
    backward pass keeps, block after block at its pooled size, plus the Dense weights
    on the features with their gradient and Adam's two moments. (Measured steps take
    1.5-2x this: batch-norm and activation outputs, gradients.) For keras.applications
    models, the input alone (their layers are not counted)."""
    height, width, channels = input_shape
    settings = BACKBONES.get(architecture)
    if settings is None:
        return 4 * images * height * width * channels
    floats = height * width * channels
    for filters, kernel, pool_after in settings["conv"]:
        if settings.get("padding", "valid") == "valid":
            height, width = max(1, height - kernel + 1), max(1, width - kernel + 1)
        floats += height * width * filters
        if pool_after:
            height, width = max(1, height // 2), max(1, width // 2)
    features = filters if settings.get("global_pool") else height * width * filters
    weights = 0
    for units in [*settings.get("dense", ()), settings["embedding_dim"]]:
        weights, features = weights + features * units, units
    return 4 * (images * floats + 4 * weights)


def build_conv_stack(input_shape, conv, dense=(), embedding_dim=50,
                     embedding_activation=EMBEDDING_ACTIVATION, activation="relu",
                     padding="valid", pool="max", batch_norm=False, input_batch_norm=False,
                     conv_dropout=0.0, dense_dropout=0.0, global_pool=False,
                     normalize=False, koch_init=False, projection_head=False,
                     name="embedding"):
    """A CNN: pixels in [0, 255] -> an embedding vector.

    koch_init: Koch et al.'s initialisation, conv weights N(0, 0.01), dense weights
    N(0, 0.2), biases N(0.5, 0.01); otherwise Keras' defaults (Glorot uniform, zeros).
    """
    import keras
    from keras import layers


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
    outputs = _embedding(x, embedding_dim, embedding_activation, normalize,
                         projection_head, **dense_init)
    return keras.Model(inputs, outputs, name=name)


def add_projection_head(base, architecture):
    """The base network with its architecture's embedding layer on top, as a projection
    head (Chen et al. 2020, SimCLR; Khosla et al. 2020, supervised contrastive): the
    loss trains through it, and the features under it, which can carry over to unseen
    classes better, are what evaluation and inference compare. Unit-length output."""
    import keras
    from keras import layers

    from network_layers import L2Normalize

    settings = BACKBONES[architecture]
    activation = settings.get("embedding_activation", EMBEDDING_ACTIVATION)
    projected = layers.Dense(settings["embedding_dim"], activation=activation,
                             name="projection")(base.output)
    return keras.Model(base.input, L2Normalize(name="projection_l2_normalize")(projected),
                       name="projected_embedding")
