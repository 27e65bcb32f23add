"""Every command the Markdown files show is one its script accepts: `python train.py`
settings resolve, `python evaluate.py` takes only a run, a report folder and the
settings that may change after training, and `python predict.py` parses with predict's
own argument parser. Placeholders such as RUN, DIR or PATH stand for paths."""
import glob
import os
import re

import pytest

from conftest import REPO_ROOT
from configurator import get_config, parse_args, resolve
from evaluate import EVALUATION_KEYS
from predict import build_parser

FLAG = re.compile(r"--\w+=[^\s`|]+")
TRAIN_COMMAND = re.compile(r"python train\.py((?: --\w+=[^\s`|]+)*)")
EVALUATE_COMMAND = re.compile(r"python evaluate\.py((?: --\w+=[^\s`|]+)*)")
# At least the command word: a bare mention of `python predict.py` runs nothing.
PREDICT_COMMAND = re.compile(r"python predict\.py((?: [^\s`|#]+)+)")
EVALUATE_PATHS = ("--run_dir=", "--report_dir=")


def _markdown_files():
    """README.md and any other Markdown at the top, under docs/ and under datasets/."""
    patterns = ("*.md", os.path.join("docs", "**", "*.md"),
                os.path.join("datasets", "**", "*.md"))
    found = {path for pattern in patterns
             for path in glob.glob(os.path.join(REPO_ROOT, pattern), recursive=True)}
    return sorted(os.path.relpath(path, REPO_ROOT) for path in found)


DOCS = _markdown_files()


def _read(name):
    with open(os.path.join(REPO_ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def _written_commands(text, command=TRAIN_COMMAND):
    """The arguments of each `python <script> ...` that `command` matches in `text`."""
    return [match.group(1).split() for match in command.finditer(text)]


def _table_commands(text):
    """The settings of each row of a table whose header holds a base command ending in
    `+` (its rows add flags to it; "the line above + ..." adds to the row above)."""
    commands, base, column, above = [], None, None, []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            base = None
            continue
        header = [i for i, cell in enumerate(cells) if re.match(r"`python train\.py", cell)
                  and cell.endswith("+")]
        if header:
            column = header[0]
            base = FLAG.findall(cells[column])
            above = base
            continue
        if base is None or set(line) <= set("|-: ") or column >= len(cells):
            continue
        cell = cells[column]
        spans = [flag for span in re.findall(r"`(--[^`]*)`", cell)
                 for flag in FLAG.findall(span)]
        above = (above if "line above" in cell else base) + spans
        commands.append(above)
    return commands


def _check_evaluate_command(argv):
    """Raise ValueError unless evaluate.py would accept `argv`: a --run_dir, maybe a
    --report_dir, and only settings of EVALUATION_KEYS, each valid on a trained run's
    settings (evaluate.py resolves them on the run's own)."""
    paths = [arg for arg in argv if arg.startswith(EVALUATE_PATHS)]
    if not any(arg.startswith("--run_dir=") for arg in paths):
        raise ValueError("no --run_dir=")
    settings = parse_args([arg for arg in argv if arg not in paths])
    fixed_by_training = sorted(set(settings) - set(EVALUATION_KEYS))
    if fixed_by_training:
        raise ValueError(f"evaluate.py does not take {', '.join(fixed_by_training)}")
    resolve(get_config(), settings)


def _check_predict_command(argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit:  # argparse has printed why to stderr
        raise ValueError("does not parse") from None


def _training_commands(text):
    return _written_commands(text) + _table_commands(text)


@pytest.mark.parametrize("name", DOCS)
@pytest.mark.parametrize("script, read, check", [
    ("train.py", _training_commands, get_config),
    ("evaluate.py", lambda text: _written_commands(text, EVALUATE_COMMAND),
     _check_evaluate_command),
    ("predict.py", lambda text: _written_commands(text, PREDICT_COMMAND),
     _check_predict_command),
])
def test_documented_commands_are_accepted(name, script, read, check):
    for argv in read(_read(name)):
        try:
            check(argv)
        except ValueError as error:
            pytest.fail(f"{name}: python {script} {' '.join(argv)}: {error}")


@pytest.mark.parametrize("name, command, at_least", [
    ("README.md", TRAIN_COMMAND, 5),
    (os.path.join("docs", "experiments.md"), TRAIN_COMMAND, 5),
    ("README.md", EVALUATE_COMMAND, 3),
    ("README.md", PREDICT_COMMAND, 2),
])
def test_the_documents_are_found_and_their_commands_read(name, command, at_least):
    assert name in DOCS
    text = _read(name)
    found = _written_commands(text, command)
    if command is TRAIN_COMMAND:
        found += _table_commands(text)
    assert len(found) >= at_least, f"too few commands read in {name}: a regex broke"


def test_table_rows_build_on_the_header_and_the_line_above():
    table = ("| `python train.py --dataset=omniglot` + | accuracy |\n"
             "|---|---|\n"
             "| nothing: the preset | 0.85 |\n"
             "| `--image_size=28,28` | 0.83 |\n"
             "| the line above + `--loss=supcon` | 0.82 |\n"
             "\n"
             "| `--seed` | not a command table |\n")
    assert _table_commands(table) == [
        ["--dataset=omniglot"],
        ["--dataset=omniglot", "--image_size=28,28"],
        ["--dataset=omniglot", "--image_size=28,28", "--loss=supcon"]]
    assert _written_commands("run `python train.py --epochs=5 --seed=2` # comment") == [
        ["--epochs=5", "--seed=2"]]


def test_evaluate_and_predict_commands_are_read_up_to_the_comment():
    text = ("python evaluate.py --run_dir=RUN --data_dir=OTHER  # all classes unseen\n"
            "`python predict.py identify RUN --gallery=DIR q.jpg --top_k=3` prints\n"
            "python predict.py verify RUN a.pgm b.pgm  # same or different\n"
            "`python predict.py` alone is no command\n")
    assert _written_commands(text, EVALUATE_COMMAND) == [
        ["--run_dir=RUN", "--data_dir=OTHER"]]
    assert _written_commands(text, PREDICT_COMMAND) == [
        ["identify", "RUN", "--gallery=DIR", "q.jpg", "--top_k=3"],
        ["verify", "RUN", "a.pgm", "b.pgm"]]


@pytest.mark.parametrize("argv", [
    ["--run_dir=RUN", "--ways=5", "--trials=1000"],
    ["--run_dir=RUN", "--report_dir=DIR", "--lake_runs=PATH/TO/all_runs"],
])
def test_evaluation_commands_with_placeholders_are_accepted(argv):
    _check_evaluate_command(argv)


@pytest.mark.parametrize("argv, message", [
    (["--run_dir=RUN", "--epochs=3"], "does not take epochs"),
    (["--ways=5"], "no --run_dir="),
    (["--run_dir=RUN", "--trials=0"], "trials must be > 0"),
    (["--run_dir=RUN", "--wayz=5"], "unknown setting 'wayz'"),
])
def test_evaluation_commands_evaluate_py_would_refuse_are_caught(argv, message):
    with pytest.raises(ValueError, match=message):
        _check_evaluate_command(argv)


@pytest.mark.parametrize("argv", [
    ["verify", "RUN", "IMG_A"],
    ["identify", "RUN", "QUERY"],
    ["identify", "RUN", "--gallery=DIR", "QUERY", "--top_k=three"],
    ["compare", "RUN", "IMG_A", "IMG_B"],
])
def test_predict_commands_its_parser_refuses_are_caught(argv):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
