"""Resolve a run's settings: configs.py globals -> dataset preset -> --key=value overrides.

Every value is checked here, once, so a typo fails at start-up with a message that
names the setting and lists what is allowed, not deep inside TensorFlow.
"""
import ast
import math

import configs

CHOICES = {
    "dataset": tuple(configs.PRESETS),
    "split": ("classes", "groups", "pairs"),
    "distance": ("euclidean", "l1_sigmoid"),
    "loss": ("contrastive", "bce", "triplet", "supcon", "normsoftmax"),
    "mining": ("semi_hard", "hard", "all"),
    "pairing": ("pairs", "batch"),
    "monitor": ("val_loss", "val_oneshot"),
    "distribute": ("none", "mirrored", "multi_worker"),
    "optimizer": ("rmsprop", "adam", "sgd"),
    "lr_schedule": ("constant", "cosine"),
    "channels": (1, 3),
}
POSITIVE = ("total_sample_size", "epochs", "batch_size", "downsample", "margin",
            "learning_rate", "trials", "triplet_margin", "images_per_class",
            "temperature")
NON_NEGATIVE = ("patience", "reduce_lr_patience", "seed", "max_images_per_class", "ways",
                "batch_groups", "weight_decay")
FRACTIONS = ("test_fraction", "val_fraction")
IN_BATCH_LOSSES = ("triplet", "supcon", "normsoftmax")  # need pairing="batch" and unit
#                                                        embeddings


def defaults():
    """The configs.py globals: every key a run accepts, with its default value."""
    return {k: v for k, v in vars(configs).items()
            if not k.startswith("_") and k != "PRESETS" and not callable(v)
            and not isinstance(v, type(configs))}


def _parse_value(key, text, default):
    """Parse `text` as a Python literal when it is one, else keep it as a string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # --data_dir=123 is still a path
    return value


def _check_type(key, value, default):
    if key == "image_size":
        ok = value is None or (isinstance(value, (tuple, list)) and len(value) == 2
                               and all(isinstance(v, int) and not isinstance(v, bool)
                                       and v > 0 for v in value))
        if not ok:
            raise ValueError(f"image_size must be None or (height, width) with two "
                             f"positive integers, e.g. --image_size=105,105; got {value!r}")
        return tuple(value) if value is not None else None
    if key == "conv_dropout":
        if not (value is None or (isinstance(value, (int, float))
                                  and not isinstance(value, bool) and 0 <= value < 1)):
            raise ValueError(f"conv_dropout must be None (the architecture's own) or a "
                             f"rate from 0 up to, not including, 1, e.g. "
                             f"--conv_dropout=0.25; got {value!r}")
        return None if value is None else float(value)
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            wanted = ("True or False" if isinstance(default, bool) else
                      f"{type(default).__name__} (like the default {default!r})")
            raise ValueError(f"{key} must be {wanted}; got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number; got {value!r}")
    if type(value) is not type(default):
        raise ValueError(f"{key} must be {type(default).__name__} "
                         f"(like the default {default!r}); got {value!r}")
    return value


def validate(config):
    """Raise ValueError naming the first setting that is out of range or not allowed."""
    from siamese_network_funcs import ARCHITECTURES
    for key, allowed in {**CHOICES, "architecture": tuple(ARCHITECTURES)}.items():
        if config[key] not in allowed:
            raise ValueError(f"{key}={config[key]!r} is not allowed; choose one of "
                             f"{', '.join(map(str, allowed))}")
    for key in POSITIVE:
        if not config[key] > 0:
            raise ValueError(f"{key} must be > 0; got {config[key]!r}")
    for key in NON_NEGATIVE:
        if config[key] < 0:
            raise ValueError(f"{key} must be >= 0; got {config[key]!r}")
    if config["ways"] == 1:
        raise ValueError("ways=1 is no test: a 1-way task has only the right candidate "
                         "to pick. Use --ways=2 or more, or 0 for 20 (or every test "
                         "class where there are fewer)")
    for key in FRACTIONS:
        if not 0 < config[key] < 1:
            raise ValueError(f"{key} must be between 0 and 1 (exclusive); "
                             f"got {config[key]!r}")
    if (config["distance"] == "l1_sigmoid") != (config["loss"] == "bce"):
        raise ValueError(f"distance={config['distance']!r} with loss={config['loss']!r} "
                         f"cannot be trained: Koch's head goes with cross-entropy "
                         f"(--distance=l1_sigmoid --loss=bce); Euclidean distance with "
                         f"--loss=contrastive or --loss=triplet")
    if config["distance"] == "l1_sigmoid" and config["pairing"] != "pairs":
        raise ValueError("distance='l1_sigmoid' learns its head on pairs: use "
                         "--pairing=pairs")
    if config["loss"] in IN_BATCH_LOSSES and config["pairing"] != "batch":
        raise ValueError(f"loss={config['loss']!r} compares the images inside each "
                         f"batch: add --pairing=batch")
    if config["lr_schedule"] != "constant" and config["reduce_lr_patience"]:
        raise ValueError(f"lr_schedule={config['lr_schedule']!r} already sets the "
                         f"learning rate of every step, so reduce_lr_patience cannot "
                         f"change it: use one of them (--reduce_lr_patience=0)")
    if config["loss"] == "normsoftmax" and config["monitor"] != "val_oneshot":
        raise ValueError("loss='normsoftmax' learns one vector per training class, so its "
                         "val_loss on the validation classes measures nothing: add "
                         "--monitor=val_oneshot")
    if config["projection_head"] and config["pairing"] != "batch":
        raise ValueError("projection_head=True trains through a head that the pair "
                         "model does not have: add --pairing=batch")
    if config["refit"] and config["split"] == "pairs":
        raise ValueError("refit=True adds the validation classes to training once they "
                         "have chosen the epoch count; split='pairs' has no classes of "
                         "its own for validation: use --split=classes or --split=groups")
    for key in ("flip", "erase"):
        if config[key] and not config["augment"]:
            raise ValueError(f"{key}=True is one of the distortions that augment=True "
                             f"applies: add --augment=True (or --{key}=False)")
    if config["class_rotations"] and config["pairing"] != "batch":
        raise ValueError("class_rotations=True adds classes to the P x K batches: add "
                         "--pairing=batch")
    if config["pairing"] == "batch":
        if config["split"] == "pairs":
            raise ValueError("pairing='batch' draws whole classes, so it needs "
                             "--split=classes or --split=groups, not split='pairs'")
        if config["batch_size"] < 2 * config["images_per_class"]:
            raise ValueError(
                f"with pairing='batch', batch_size={config['batch_size']} must hold at "
                f"least 2 classes of images_per_class={config['images_per_class']} "
                f"images: use --batch_size={2 * config['images_per_class']} or more")
        if config["images_per_class"] < 2:
            raise ValueError("images_per_class must be >= 2 so batches hold genuine "
                             "pairs")
    return config


def wants_help(argv):
    return any(arg in ("-h", "--help") for arg in argv)


def help_text(doc, keys=None,
              heading="Settings (--key=value; configs.py's defaults, which the "
                      "dataset's preset then changes):"):
    """A script's docstring and the settings it takes (every key of configs.py unless
    `keys`), each with its configs.py default, for -h / --help."""
    base = defaults()
    lines = [f"  --{k}={base[k]!r}" for k in (keys or base)]
    return f"{doc.strip()}\n\n{heading}\n" + "\n".join(lines)


def parse_args(argv):
    """`--key=value` strings -> {key: value}, each key checked against configs.py."""
    base = defaults()
    parsed = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"cannot read argument {arg!r}: write settings as "
                             f"--key=value, e.g. --epochs=5")
        key, text = arg[2:].split("=", 1)
        _check_known(key, base)
        parsed[key] = _parse_value(key, text, base[key])
    return parsed


def resolve(config, explicit):
    """`config` updated with `explicit` settings, every value type- and range-checked."""
    base = defaults()
    for key in explicit:
        _check_known(key, base)
    config = {**config, **explicit}
    for key in base:
        config[key] = _check_type(key, config.get(key, base[key]), base[key])
    return validate(config)


def get_config(argv=(), **overrides):
    """Resolve the settings from `--key=value` strings and/or keyword overrides.

    The preset of the chosen dataset applies first, then the explicit overrides,
    so `--dataset=att_faces --epochs=5` is the AT&T recipe with five epochs.
    """
    explicit = {**parse_args(argv), **overrides}
    dataset = explicit.get("dataset", configs.dataset)
    if dataset not in configs.PRESETS:
        raise ValueError(f"dataset={dataset!r} is not allowed; choose one of "
                         f"{', '.join(configs.PRESETS)}")
    return resolve({**defaults(), **configs.PRESETS[dataset]}, explicit)


def _check_known(key, base):
    if key not in base:
        raise ValueError(f"unknown setting {key!r}. Valid settings: "
                         f"{', '.join(sorted(base))} (see configs.py)")
