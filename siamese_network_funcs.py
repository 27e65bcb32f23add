"""The Siamese network: one shared base network (backbones.py) under two image inputs
and the pair's output, and the optimizer and loss (losses.py) a config trains it with.

Importing this module registers every custom Keras object, so a saved model
(`model.keras`, or the architecture JSON plus `.weights.h5`) reloads in a fresh process
with safe mode on.
"""
import tf_setup  # noqa: F401  (must come before keras)
import keras
from keras import layers

import backbones
import loss_functions  # noqa: F401  (registers the losses a saved compiled model names)
import losses
import metrics
from network_layers import AbsoluteDifference, EuclideanDistance

HEAD_LAYER = "similarity"  # the Dense sigmoid of the weighted-L1 head


def build_siamese_model(input_shape, architecture="att_faces", normalize=False,
                        distance="euclidean", projection_head=False, conv_dropout=None,
                        weights="", freeze_below="", name="siamese"):
    """Two image inputs -> one shared base network -> the pair's output (batch, 1):
    distance="euclidean": the Euclidean distance of the two embeddings;
    distance="l1_sigmoid": Koch et al.'s p(same) = sigmoid(sum_j alpha_j |a_j - b_j| + b).

    Returns (pair model, base); `base` (backbones.build, which takes the other
    arguments) maps one image to its embedding. Training `base` alone (in-batch
    losses) trains the pair model too.
    """
    base = backbones.build(architecture, input_shape, normalize=normalize,
                           projection_head=projection_head, conv_dropout=conv_dropout,
                           weights=weights, freeze_below=freeze_below)
    image_a = keras.Input(shape=input_shape, name="image_a")
    image_b = keras.Input(shape=input_shape, name="image_b")
    embeddings = [base(image_a), base(image_b)]
    if distance == "l1_sigmoid":
        output = layers.Dense(1, activation="sigmoid", name=HEAD_LAYER)(
            AbsoluteDifference(name="l1_difference")(embeddings))
    else:
        output = EuclideanDistance(name="distance")(embeddings)
    return keras.Model([image_a, image_b], output, name=name), base


def build_network(config, input_shape):
    """(pair model, base network) as the config describes, freshly initialised."""
    return build_siamese_model(
        input_shape, config["architecture"], normalize=losses.unit_embeddings(config),
        distance=config["distance"], projection_head=config["projection_head"],
        conv_dropout=config["conv_dropout"], weights=config["backbone_weights"],
        freeze_below=config["freeze_below"])


def pair_scorer(model):
    """The metrics.PairScorer that scores embeddings as the pair model does, without
    running it: Koch's weighted-L1 head (its alpha and bias), or Euclidean distance."""
    try:
        kernel, bias = model.get_layer(HEAD_LAYER).get_weights()
    except ValueError:
        return metrics.EUCLIDEAN
    return metrics.PairScorer(kernel[:, 0], bias[0])


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


def compile_network(config, model, base, steps_per_epoch=1, num_classes=0):
    """Compile and return the network that training fits: for pairing="pairs" the pair
    model on pairs; for pairing="batch" the base network (with config["projection_head"],
    a projection head on top) on (images, class labels) batches, wrapped as the loss
    needs (losses.build); `num_classes` counts the training classes."""
    network = model
    if config["pairing"] == "batch":
        network = (backbones.add_projection_head(base, config["architecture"])
                   if config["projection_head"] else base)
    trainee, loss, pair_metrics = losses.build(config, network, num_classes)
    trainee.compile(optimizer=configured_optimizer(config, steps_per_epoch), loss=loss,
                    metrics=pair_metrics, jit_compile=config.get("jit_compile", False))
    return trainee
