"""Resolve a run's settings: configs.py globals -> dataset preset -> --key=value overrides.

Every value is checked here, once, so a typo fails at start-up with a message that
names the setting and lists what is allowed, not deep inside TensorFlow.
"""
import ast
import io
import math
import os
import re
import textwrap
import tokenize
from typing import NamedTuple

import backbones
import configs
import losses

CHOICES = {
    "dataset": tuple(configs.PRESETS),
    "split": ("classes", "groups", "pairs"),
    "distance": ("euclidean", "l1_sigmoid"),
    "mining": losses.MINING,
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


def choices():
    """Every setting with a fixed set of values, and those values: CHOICES, and the
    names in the base-network and loss registries (read now: a test or a notebook
    may register one more)."""
    return {**CHOICES, "architecture": tuple(backbones.BACKBONES),
            "loss": tuple(losses.LOSSES)}


def validate(config):
    """Raise ValueError naming the first setting that is out of range or not allowed."""
    for key, allowed in choices().items():
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
        if not 0 <= config[key] < 1:
            raise ValueError(f"{key} must be from 0 up to, not including, 1; "
                             f"got {config[key]!r}")
    if config["val_fraction"] == 0:
        raise ValueError("val_fraction=0 leaves nothing to choose the epoch and calibrate "
                         "the threshold on: use a val_fraction above 0, e.g. 0.2")
    if config["test_fraction"] == 0 and config["split"] == "pairs":
        raise ValueError("test_fraction=0 (test on another folder of unseen classes) "
                         "needs classes of its own: use --split=classes or "
                         "--split=groups, or a test_fraction above 0")
    losses.check(config)
    check_backbone(config)
    if config["lr_schedule"] != "constant" and config["reduce_lr_patience"]:
        raise ValueError(f"lr_schedule={config['lr_schedule']!r} already sets the "
                         f"learning rate of every step, so reduce_lr_patience cannot "
                         f"change it: use one of them (--reduce_lr_patience=0)")
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


def check_backbone(config):
    """Raise ValueError when a backbone setting does not fit the architecture."""
    if backbones.is_application(config["architecture"]):
        weights = config["backbone_weights"]
        if weights not in ("", "imagenet") and not os.path.isfile(weights):
            raise ValueError(f"backbone_weights={weights!r} is no file: give the path of "
                             f"a weights file, 'imagenet', or '' for a random start")
        if config["conv_dropout"] is not None:
            raise ValueError(f"conv_dropout is the rate after each block of a conv "
                             f"stack; architecture={config['architecture']!r} is a "
                             f"keras.applications model: drop --conv_dropout")
        return
    for key in ("backbone_weights", "freeze_below"):
        if config[key]:
            raise ValueError(f"{key} applies to keras.applications models "
                             f"({', '.join(backbones.APPLICATIONS)}), not to the conv "
                             f"stack architecture={config['architecture']!r}: drop "
                             f"--{key}")


# Settings whose default None hides what else they take (_check_type names them too).
OPTIONAL_TYPES = {"image_size": "height,width or None", "conv_dropout": "float or None"}
SECTION_HEADING = re.compile(r"#\s*---\s*(?P<name>.*?)\s*-*\s*$")
HELP_WIDTH = 88
NO_BREAK = "\N{NO-BREAK SPACE}"  # textwrap breaks lines at ASCII spaces only


class SettingNote(NamedTuple):
    section: str  # the configs.py heading above the setting, e.g. "data"
    key: str
    meaning: str  # the comment beside the setting in configs.py, "" when it has none


def wants_help(argv):
    """True when `argv` holds -h or --help."""
    return any(arg in ("-h", "--help") for arg in argv)


def setting_notes(path=None):
    """A SettingNote for each name assigned at the top level of configs.py (or of
    `path`), in file order. The section is the last `# --- name ---` line above the
    setting; the meaning is the comment after the assignment, joined with the
    comment-only lines right below it that are indented past its `#`."""
    with tokenize.open(path or configs.__file__) as handle:
        source = handle.read()
    # tokenize rather than a search for "#": a "#" inside a string starts no comment.
    comments = {token.start[0]: token
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    headings = {row: match["name"] for row, token in comments.items()
                if token.start[1] == 0
                and (match := SECTION_HEADING.match(token.string))}
    notes = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign):
            continue
        above = [row for row in headings if row < node.lineno]
        section = headings[max(above)] if above else ""
        meaning = _comment_from(node.end_lineno, comments)
        notes += [SettingNote(section, target.id, meaning) for target in node.targets
                  if isinstance(target, ast.Name)]
    return notes


def _comment_from(row, comments):
    """The comment that ends line `row`, continued by the comment-only lines below it
    whose text starts right of its `#`, as one line of text."""
    first = comments.get(row)
    if first is None:
        return ""
    text = first.string[1:].strip()
    while row + 1 in comments:
        row += 1
        comment = comments[row]
        body = comment.string[1:]
        text_column = comment.start[1] + 1 + len(body) - len(body.lstrip())
        if comment.line[:comment.start[1]].strip() or text_column <= first.start[1]:
            break
        # A line opening with a quoted choice ("groups": ...) is a list's next item.
        text += ("; " if body.lstrip().startswith('"') else " ") + body.strip()
    return text


def help_text(doc, keys=None,
              heading="Settings (--key=value; configs.py's defaults, which the "
                      "dataset's preset then changes):", argv=None):
    """`doc` and the settings a script takes, for -h / --help: every setting of
    configs.py, or only `keys`, grouped under configs.py's section headings, each as
    --key=default with its type and its meaning, read from the comment beside it in
    configs.py so that the help says what the file says.

    When it lists every setting (train.py's help), it reads `--dataset=NAME` from
    the command line `argv` and shows beside each default the value preset NAME
    sets; an unknown NAME gets a line listing the presets instead. A subset (evaluate.py's `keys`) gets no preset
    values: unset, those settings are the run's own."""
    base = defaults()
    for key in keys or ():
        _check_known(key, base)
    listed = set(base if keys is None else keys)
    lines = [doc.strip(), "", heading]
    preset_name, preset = None, {}
    if keys is None:
        preset_name = _dataset_asked(argv or [])
        preset = configs.PRESETS.get(preset_name, {})
        lines += _wrap(_preset_line(preset_name), "", "")
    section = None
    for note in setting_notes():
        if note.key not in listed:
            continue
        if note.section != section:
            section = note.section
            lines += ["", f"{section}:"] if section else [""]
        default = base[note.key]
        # No-break spaces keep "--image_size=(52, 52)" whole when the line wraps.
        summary = (f"--{note.key}={default!r}".replace(" ", NO_BREAK)
                   + f" ({_type_name(note.key, default)})")
        if note.key in preset:
            summary += "; " + (f"preset {preset_name}: {preset[note.key]!r}"
                               .replace(" ", NO_BREAK))
        # The summary wraps to column 4 and the meaning sits at 6, so they never mix.
        lines += [line.replace(NO_BREAK, " ") for line in _wrap(summary, "  ", "    ")]
        lines += _wrap(note.meaning, "      ", "      ")
    return "\n".join(lines)


def _dataset_asked(argv):
    """NAME of the last --dataset=NAME in `argv` (the one a run would use), or None."""
    names = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--dataset=")]
    return names[-1] if names else None


def _preset_line(name):
    presets = ", ".join(configs.PRESETS)
    if name is None:
        return (f"Without --dataset the preset of dataset={configs.dataset!r} applies; "
                f"add --dataset=NAME to --help to see what a preset sets "
                f"(presets: {presets}).")
    if name not in configs.PRESETS:
        return f"--dataset={name!r} is not a preset; the presets are: {presets}."
    return f"Beside each default: the value that --dataset={name} sets instead."


def _type_name(key, default):
    if key in OPTIONAL_TYPES:
        return OPTIONAL_TYPES[key]
    name = type(default).__name__
    if key in choices():
        return f"{name}: {' | '.join(map(str, choices()[key]))}"
    return name


def _wrap(text, first_indent, indent):
    """`text` wrapped to HELP_WIDTH; paths and flags are never split."""
    return textwrap.wrap(text, HELP_WIDTH, initial_indent=first_indent,
                         subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


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
