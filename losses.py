"""Every loss a run can train with, by name (LOSSES), with what each needs.

The registry is plain data, so configurator validates a config without loading
TensorFlow, and train.py and evaluate.py read a loss's traits instead of branching on
its name. The Keras classes are in loss_functions.py, imported when a loss is built.

Adding a loss: its class in loss_functions.py, one LossSpec line below, and a NumPy
reference test in tests/test_losses.py.
"""
from typing import Callable, NamedTuple, Optional

MINING = ("semi_hard", "hard", "all")  # how the triplet loss picks its triplets


class LossSpec(NamedTuple):
    pairings: tuple  # the `pairing` settings it trains with ("pairs", "batch")
    distance: str  # the pair output the pair model needs: "euclidean" or "l1_sigmoid"
    unit_embeddings: bool  # the base network ends in L2 normalisation
    validation_loss: bool  # its loss on the validation classes measures something
    fixed_rule: bool  # it trains toward the write-ups' fixed threshold (fixed_threshold)
    settings: tuple  # the config keys it reads, shown beside its name
    build: Callable  # (config, network, num_classes) -> (network to fit, loss, metrics)
    check: Optional[Callable] = None  # (config) -> raises ValueError on a bad setting


def _contrastive(config, network, num_classes):
    import loss_functions as lf

    if config["pairing"] == "pairs":
        return (network, lf.ContrastiveLoss(margin=config["margin"]),
                [lf.DistanceAccuracy(threshold=fixed_threshold(config))])
    return network, lf.BatchContrastiveLoss(margin=config["margin"]), []


def _bce(config, network, num_classes):
    import keras

    return (network, keras.losses.BinaryCrossentropy(),
            [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.5)])


def _triplet(config, network, num_classes):
    import loss_functions as lf

    return network, lf.TripletLoss(margin=config["triplet_margin"],
                                   mining=config["mining"],
                                   soft_margin=config["soft_margin"]), []


def _supcon(config, network, num_classes):
    import loss_functions as lf

    return network, lf.SupConLoss(temperature=config["temperature"]), []


def _normsoftmax(config, network, num_classes):
    """The network with a CosineClassifier over the `num_classes` training classes on
    top, trained with cross-entropy; only the network under it is kept."""
    import keras

    import loss_functions as lf

    logits = lf.CosineClassifier(num_classes, config["temperature"],
                                 name="class_logits")(network.output)
    return (keras.Model(network.input, logits, name="embedding_classifier"),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True), [])


def _prototypical(config, network, num_classes):
    import loss_functions as lf

    return network, lf.PrototypicalLoss(shots=config["prototype_shots"]), []


def _check_prototypical(config):
    if config["prototype_shots"] < 1:
        raise ValueError(f"prototype_shots must be 1 or more (support images per class); "
                         f"got {config['prototype_shots']!r}")
    if config["prototype_shots"] >= config["images_per_class"]:
        raise ValueError(
            f"loss='prototypical' needs queries beside the prototype_shots="
            f"{config['prototype_shots']} support images of each class: set "
            f"--images_per_class={config['prototype_shots'] + 1} or more")


LOSSES = {
    # Hadsell et al. 2006, on pairs or on every pair of a P x K batch.
    "contrastive": LossSpec(("pairs", "batch"), "euclidean", False, True, True,
                            ("margin",), _contrastive),
    # Koch et al. 2015: cross-entropy on the weighted-L1 head's p(same).
    "bce": LossSpec(("pairs",), "l1_sigmoid", False, True, True, (), _bce),
    # FaceNet (Schroff et al. 2015), triplets mined in the batch.
    "triplet": LossSpec(("batch",), "euclidean", True, True, False,
                        ("mining", "triplet_margin", "soft_margin"), _triplet),
    # Supervised contrastive (Khosla et al. 2020).
    "supcon": LossSpec(("batch",), "euclidean", True, True, False, ("temperature",),
                       _supcon),
    # NormSoftmax (Zhai & Wu 2019): its class vectors are the training classes', so its
    # loss on other classes means nothing.
    "normsoftmax": LossSpec(("batch",), "euclidean", True, False, False,
                            ("temperature",), _normsoftmax),
    # Prototypical networks (Snell et al. 2017), each P x K batch an episode.
    "prototypical": LossSpec(("batch",), "euclidean", False, True, False,
                             ("prototype_shots",), _prototypical, _check_prototypical),
}


def check(config):
    """Raise ValueError when the config's loss cannot train with its other settings."""
    spec = LOSSES[config["loss"]]
    if config["distance"] != spec.distance:
        raise ValueError(f"distance={config['distance']!r} with loss={config['loss']!r} "
                         f"cannot be trained: Koch's head goes with cross-entropy "
                         f"(--distance=l1_sigmoid --loss=bce); Euclidean distance with "
                         f"the other losses")
    if config["pairing"] not in spec.pairings:
        if config["distance"] == "l1_sigmoid":
            raise ValueError("distance='l1_sigmoid' learns its head on pairs: use "
                             "--pairing=pairs")
        raise ValueError(f"loss={config['loss']!r} compares the images inside each "
                         f"batch: add --pairing=batch")
    if not spec.validation_loss and config["monitor"] != "val_oneshot":
        raise ValueError(f"loss={config['loss']!r} learns one vector per training "
                         f"class, so its val_loss on the validation classes measures "
                         f"nothing: add --monitor=val_oneshot")
    if spec.check:
        spec.check(config)


def unit_embeddings(config):
    """Whether the base network ends in L2 normalisation: asked for, or the loss's."""
    return config["normalize"] or LOSSES[config["loss"]].unit_embeddings


def describe(config):
    """The loss in words, with the settings it reads: "triplet loss (mining=hard, ...)"."""
    settings = ", ".join(f"{key}={config[key]}"
                         for key in LOSSES[config["loss"]].settings)
    return f"{config['loss']} loss" + (f" ({settings})" if settings else "")


def build(config, network, num_classes=0):
    """(network to fit, Keras loss, metrics) for the config's loss. `network` is the
    pair model for pairing="pairs", the base network (or it with a projection head)
    for pairing="batch"; `num_classes` counts the training classes."""
    return LOSSES[config["loss"]].build(config, network, num_classes)


def fixed_threshold(config):
    """The write-ups' decision rule as a dissimilarity threshold (see metrics.PairScorer):
    d < margin/2 for Euclidean models, p > 0.5 (1 - p < 0.5) for the weighted-L1 head."""
    return 0.5 if config["distance"] == "l1_sigmoid" else config["margin"] / 2


def fixed_rule_applies(config):
    """Whether the run's loss trained toward fixed_threshold: Koch's head toward
    p = 0.5, the contrastive loss toward margin/2 on the features compared; not the
    losses that place embeddings with no threshold in mind, nor a loss applied above a
    projection head."""
    return LOSSES[config["loss"]].fixed_rule and not config.get("projection_head")


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
