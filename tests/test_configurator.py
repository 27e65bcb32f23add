"""configurator.get_config: configs.py globals -> dataset preset -> explicit overrides."""
import copy
import re

import pytest

import configs
import configurator
from configurator import get_config
from backbones import BACKBONES


def _expected(value):
    """Presets may write image_size as a list or tuple; the config holds a tuple."""
    return tuple(value) if isinstance(value, list) else value


# --- defaults and presets ------------------------------------------------------------

def test_defaults_resolve_with_the_default_dataset_preset():
    config = get_config()
    assert config["dataset"] == configs.dataset == "omniglot_mini"
    preset = configs.PRESETS["omniglot_mini"]
    # The preset must actually change something, or this test could not tell.
    assert any(getattr(configs, key) != value for key, value in preset.items())
    for key, value in preset.items():
        assert config[key] == _expected(value), key
    for key, value in configurator.defaults().items():
        if key not in preset:
            assert config[key] == value, key
    assert set(config) == set(configurator.defaults())


def test_preset_applies_first_then_explicit_overrides():
    preset = configs.PRESETS["att_faces"]
    assert preset["epochs"] != 5
    for argv in (["--dataset=att_faces", "--epochs=5"],
                 ["--epochs=5", "--dataset=att_faces"]):
        config = get_config(argv)
        assert config["dataset"] == "att_faces"
        assert config["epochs"] == 5
        for key, value in preset.items():
            if key != "epochs":
                assert config[key] == _expected(value), key


def test_keyword_overrides_behave_like_arguments():
    assert get_config(dataset="att_faces", epochs=5) == get_config(
        ["--dataset=att_faces", "--epochs=5"])


def test_overriding_a_preset_key_does_not_change_the_preset():
    before = copy.deepcopy(configs.PRESETS)
    config = get_config(["--dataset=att_faces", "--epochs=5", "--downsample=3"])
    assert config["downsample"] == 3
    assert configs.PRESETS == before
    assert get_config(["--dataset=att_faces"])["epochs"] == before["att_faces"]["epochs"]


@pytest.mark.parametrize("dataset", sorted(configs.PRESETS))
def test_every_preset_resolves_to_a_valid_config(dataset):
    config = get_config([f"--dataset={dataset}"])
    assert config["architecture"] in BACKBONES
    assert config["dataset"] == dataset


# --- parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize("argument, key, expected", [
    ("--image_size=105,105", "image_size", (105, 105)),
    ("--image_size=(64, 32)", "image_size", (64, 32)),
    ("--image_size=[28,28]", "image_size", (28, 28)),
    ("--image_size=None", "image_size", None),
    ("--conv_dropout=0.25", "conv_dropout", 0.25),
    ("--conv_dropout=0", "conv_dropout", 0.0),
    ("--conv_dropout=None", "conv_dropout", None),
    ("--learning_rate=1e-3", "learning_rate", 0.001),
    ("--learning_rate=0.0005", "learning_rate", 0.0005),
    ("--epochs=7", "epochs", 7),
    ("--split=pairs", "split", "pairs"),
    ("--out_dir=some/where", "out_dir", "some/where"),
    ("--data_dir=123", "data_dir", "123"),  # a path, even when it looks like a number
    ("--data_dir=a=b", "data_dir", "a=b"),  # only the first '=' separates key and value
])
def test_values_are_parsed_to_the_type_of_their_default(argument, key, expected):
    value = get_config(["--dataset=digits", argument])[key]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("key", ["learning_rate", "margin"])
def test_an_int_is_accepted_for_a_float_setting(key):
    value = get_config([f"--{key}=2"])[key]
    assert value == 2.0 and type(value) is float


BOOLEAN_SETTINGS = [k for k, v in configurator.defaults().items() if isinstance(v, bool)]


def test_configs_has_boolean_settings():
    assert {"augment", "strict", "refit"} <= set(BOOLEAN_SETTINGS)


@pytest.mark.parametrize("key", BOOLEAN_SETTINGS)
def test_boolean_settings_parse_true_and_false(key):
    needs = ["--augment=True"] if key in ("flip", "erase") else []  # distortions of it
    assert get_config([f"--{key}=True", *needs])[key] is True
    assert get_config([f"--{key}=False", *needs])[key] is False
    with pytest.raises(ValueError, match=key):
        get_config([f"--{key}=1"])


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: get_config(["--epoch=5"]),
    lambda: get_config(epoch=5),
])
def test_unknown_key_raises_and_lists_the_valid_keys(call):
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert "'epoch'" in message
    for key in configurator.defaults():
        assert key in message, key


@pytest.mark.parametrize("argv, key", [
    (["--epochs=abc"], "epochs"),
    (["--epochs=1.5"], "epochs"),
    (["--epochs=True"], "epochs must be int (like the default"),
    (["--margin=True"], "margin must be float"),
    (["--image_size=True,64"], "image_size"),
    (["--margin=1e400"], "margin must be a finite number"),
    (["--learning_rate=nan"], "learning_rate"),
    (["--batch_size=None"], "batch_size"),
    (["--learning_rate=fast"], "learning_rate"),
    (["--image_size=105"], "image_size"),
    (["--image_size=0,105"], "image_size"),
    (["--image_size=1.5,2"], "image_size"),
    (["--image_size=1,2,3"], "image_size"),
    (["--conv_dropout=1"], "conv_dropout"),
    (["--conv_dropout=-0.1"], "conv_dropout"),
    (["--conv_dropout=True"], "conv_dropout"),
    (["--conv_dropout=half"], "conv_dropout"),
])
def test_wrong_type_raises_naming_the_key(argv, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        get_config(argv)


def test_wrong_type_in_a_keyword_override_raises():
    with pytest.raises(ValueError, match="epochs"):
        get_config(epochs="5")


@pytest.mark.parametrize("argument, key", [
    ("--epochs=0", "epochs"),
    ("--batch_size=-1", "batch_size"),
    ("--total_sample_size=0", "total_sample_size"),
    ("--learning_rate=0", "learning_rate"),
    ("--margin=-1.0", "margin"),
    ("--downsample=0", "downsample"),
    ("--seed=-1", "seed"),
    ("--patience=-1", "patience"),
    ("--max_images_per_class=-2", "max_images_per_class"),
])
def test_out_of_range_number_raises_naming_the_key_and_the_bound(argument, key):
    with pytest.raises(ValueError) as error:
        get_config([argument])
    message = str(error.value)
    assert key in message
    assert "> 0" in message or ">= 0" in message


@pytest.mark.parametrize("argument, key", [
    ("--test_fraction=1.5", "test_fraction"),
    ("--test_fraction=-0.1", "test_fraction"),
    ("--val_fraction=1", "val_fraction"),
    ("--val_fraction=-0.1", "val_fraction"),
])
def test_fraction_outside_zero_one_raises(argument, key):
    with pytest.raises(ValueError) as error:
        get_config([argument])
    message = str(error.value)
    assert key in message
    assert "from 0 up to, not including, 1" in message


@pytest.mark.parametrize("arguments, message", [
    (["--val_fraction=0"], "val_fraction=0 leaves nothing to choose the epoch"),
    (["--dataset=att_faces", "--test_fraction=0"], "test_fraction=0 (test on another "
                                                   "folder of unseen classes) needs"),
])
def test_zero_fractions_that_cannot_work_are_refused(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_config(arguments)


def test_test_fraction_zero_is_allowed_with_class_splits():
    assert get_config(["--dataset=omniglot"])["test_fraction"] == 0.0


@pytest.mark.parametrize("key, allowed", [
    ("split", ("classes", "groups", "pairs")),
    ("loss", ("contrastive", "bce", "triplet", "supcon", "normsoftmax", "prototypical")),
    ("mining", ("semi_hard", "hard", "all")),
    ("pairing", ("pairs", "batch")),
    ("monitor", ("val_loss", "val_oneshot")),
    ("distance", ("euclidean", "l1_sigmoid")),
    ("optimizer", ("rmsprop", "adam", "sgd")),
    ("dataset", tuple(configs.PRESETS)),
    ("architecture", tuple(BACKBONES)),
])
def test_value_not_among_the_choices_raises_listing_them(key, allowed):
    with pytest.raises(ValueError) as error:
        get_config([f"--{key}=foo"])
    message = str(error.value)
    assert key in message and "'foo'" in message
    for choice in allowed:
        assert choice in message, choice


def test_channels_must_be_one_or_three():
    with pytest.raises(ValueError, match="channels"):
        get_config(["--channels=2"])
    assert get_config(["--channels=3"])["channels"] == 3


@pytest.mark.parametrize("name", configurator.CHOICES["optimizer"])
def test_every_allowed_optimizer_can_be_built(name):
    from siamese_network_funcs import make_optimizer
    config = get_config([f"--optimizer={name}", "--learning_rate=0.01"])
    optimizer = make_optimizer(config["optimizer"], config["learning_rate"])
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


@pytest.mark.parametrize("argument", ["epochs=5", "--epochs", "-epochs=5", "--epochs 5",
                                      "epochs"])
def test_malformed_argument_raises(argument):
    with pytest.raises(ValueError, match="--key=value"):
        get_config([argument])


@pytest.mark.parametrize("argv, message", [
    (["--loss=triplet"], "--pairing=batch"),
    (["--loss=supcon"], "--pairing=batch"),
    (["--loss=supcon", "--pairing=batch", "--temperature=0"], "temperature"),
    (["--distance=l1_sigmoid"], "--loss=bce"),
    (["--loss=bce"], "l1_sigmoid"),
    (["--distance=l1_sigmoid", "--loss=bce", "--pairing=batch"], "--pairing=pairs"),
    (["--pairing=batch", "--split=pairs"], "split"),
    (["--pairing=batch", "--batch_size=6", "--images_per_class=4"], "batch_size"),
    (["--pairing=batch", "--images_per_class=1"], "images_per_class"),
    (["--class_rotations=True"], "--pairing=batch"),
    (["--lr_schedule=cosine", "--reduce_lr_patience=2"], "--reduce_lr_patience=0"),
    (["--loss=normsoftmax", "--monitor=val_oneshot"], "--pairing=batch"),
    (["--loss=normsoftmax", "--pairing=batch"], "--monitor=val_oneshot"),
    (["--projection_head=True"], "--pairing=batch"),
    (["--refit=True", "--split=pairs"], "--split=classes"),
    (["--flip=True"], "--augment=True"),
    (["--erase=True"], "--augment=True"),
    (["--ways=1"], "--ways=2 or more"),
    (["--dataset=att_faces_oneshot", "--augment=False"], "--flip=False"),
])
def test_settings_that_cannot_work_together_raise_saying_what_to_change(argv, message):
    argv = ["--dataset=digits", *argv]  # a preset of pair batches and val_loss
    with pytest.raises(ValueError, match=message):
        get_config(argv)


def test_triplet_with_batch_pairing_resolves():
    config = get_config(["--loss=triplet", "--pairing=batch", "--mining=hard"])
    assert (config["loss"], config["pairing"], config["mining"]) == \
        ("triplet", "batch", "hard")


def test_help_lists_every_setting_and_exits_cleanly(capsys):
    import evaluate
    import train
    assert train.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert "python train.py" in printed and "--epochs=13" in printed
    assert all(f"--{key}=" in printed for key in configurator.defaults())
    assert evaluate.main(["-h"]) == 0
    printed = capsys.readouterr().out
    assert "--run_dir" in printed and "--ways=0" in printed and "--epochs" not in printed


# --- help: every setting with its meaning, read from configs.py -----------------------

def _help_entries(text):
    """{key: (summary, meaning)} read back from help_text's layout: a setting's line at
    column 2, the rest of its summary at 4, its meaning at 6."""
    entries, key = {}, None
    for line in text.splitlines():
        if line.startswith("  --"):
            key = line.split("=", 1)[0][4:]
            entries[key] = [line.strip(), ""]
        elif key and line.startswith("      "):
            entries[key][1] = f"{entries[key][1]} {line.strip()}".strip()
        elif key and line.startswith("    "):
            entries[key][0] += " " + line.strip()
        else:
            key = None
    return {key: tuple(entry) for key, entry in entries.items()}


def _configs_lines():
    with open(configs.__file__, encoding="utf-8") as handle:
        return handle.read().splitlines()


def _comment_lines(key):
    """The text of the comment beside `key` in configs.py and of the `#` lines indented
    under it, read as plain lines."""
    lines = _configs_lines()
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
    texts = [lines[row].split("  # ", 1)[1].strip()]
    for line in lines[row + 1:]:
        if not re.match(r"#\s{2,}\S", line):
            break
        texts.append(line[1:].strip())
    return texts


def _train_help(*argv):
    """The help as `python train.py ARGV` prints it."""
    return configurator.help_text("train.py's docstring.", argv=list(argv))


def test_help_gives_every_setting_a_meaning_from_configs_py():
    entries = _help_entries(_train_help("--help"))
    assert set(entries) == set(configurator.defaults())
    unexplained = sorted(key for key, (_, meaning) in entries.items() if not meaning)
    assert unexplained == [], (f"configs.py has no comment saying what "
                               f"{', '.join(unexplained)} mean(s)")


def test_help_meaning_is_the_comment_beside_the_setting():
    entries = _help_entries(_train_help("--help"))
    summary, meaning = entries["margin"]
    assert _comment_lines("margin")[0] in meaning
    assert summary.startswith(f"--margin={configs.margin!r} (float)")
    # A comment continued on lined-up `#` lines is one text, without the `#`s.
    for key in ("split", "loss", "pairing"):
        texts = _comment_lines(key)
        assert len(texts) > 1, f"configs.py no longer continues {key}'s comment"
        assert all(text in entries[key][1] for text in texts), key
        assert "#" not in entries[key][1]


def test_help_groups_settings_under_configs_sections_in_file_order():
    text = _train_help("--help")
    lines = _configs_lines()
    headings = [re.match(r"# --- (.*?) -*$", line).group(1) for line in lines
                if line.startswith("# --- ")]
    assigned = [line.split(" = ", 1)[0] for line in lines
                if re.match(r"\w+ = ", line)]
    settings = [key for key in assigned if key in configurator.defaults()]
    assert [line[:-1] for line in text.splitlines()
            if line.endswith(":") and not line.startswith(" ")][1:] == headings
    assert list(_help_entries(text)) == settings
    assert max(map(len, text.splitlines())) <= configurator.HELP_WIDTH


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_train_help_with_a_dataset_shows_the_presets_values(capsys, flag):
    import train
    assert train.main(["--dataset=omniglot", flag]) == 0
    entries = _help_entries(capsys.readouterr().out)
    preset = configs.PRESETS["omniglot"]
    assert preset["image_size"] != configs.image_size
    summary, _ = entries["image_size"]
    assert summary.startswith(f"--image_size={configs.image_size!r} ")
    assert summary.endswith(f"; preset omniglot: {preset['image_size']!r}")
    unset = next(key for key in configurator.defaults() if key not in preset)
    assert "preset" not in entries[unset][0]


def test_help_with_an_unknown_dataset_lists_the_presets():
    text = _train_help("--dataset=nope", "--help")
    sentence = " ".join(text.split()).split("--dataset='nope' is not a preset; ", 1)[1]
    assert sentence.startswith(f"the presets are: {', '.join(configs.PRESETS)}.")
    entries = _help_entries(text)
    assert set(entries) == set(configurator.defaults())
    assert not any("preset" in summary for summary, _ in entries.values())


def test_help_for_some_keys_lists_only_them_without_presets():
    text = configurator.help_text("evaluate.py's docstring.", ("ways", "data_dir"),
                                  "Settings:", argv=["--dataset=omniglot"])
    entries = _help_entries(text)
    assert list(entries) == ["data_dir", "ways"]  # configs.py's order
    assert "preset" not in text
    with pytest.raises(ValueError, match="unknown setting 'wayz'"):
        configurator.help_text("doc", ("wayz",))


def test_setting_notes_read_comments_not_hashes_inside_strings(tmp_path):
    source = tmp_path / "settings.py"
    source.write_text("\n".join([
        "# --- first -------",
        'alpha = "a # b"  # what alpha is',
        "#" + " " * 18 + "and more of it",
        "beta = 2  # beta's meaning",
        "# a remark of its own, not beta's",
        "gamma = 3",
        "",
        "# --- second ---",
        'delta = "x"  # "x": an x',
        '#              "y": a y',
    ]) + "\n", encoding="utf-8")
    assert configurator.setting_notes(str(source)) == [
        ("first", "alpha", "what alpha is and more of it"),
        ("first", "beta", "beta's meaning"),
        ("first", "gamma", ""),
        ("second", "delta", '"x": an x; "y": a y'),
    ]


def test_a_config_resolves_without_loading_tensorflow():
    # A fresh interpreter: in this one the other tests have loaded TensorFlow already.
    import subprocess
    import sys

    from conftest import REPO_ROOT
    code = ("import sys, configurator; configurator.get_config(['--dataset=omniglot']); "
            "configurator.help_text('doc'); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
