"""Every `python train.py` command the README and the experiment log show is one that
train.py accepts: known settings, right types, a combination it can train."""
import os
import re

import pytest

from conftest import REPO_ROOT
from configurator import get_config

DOCS = ("README.md", os.path.join("docs", "experiments.md"))
FLAG = re.compile(r"--\w+=[^\s`|]+")
TRAIN_COMMAND = re.compile(r"python train\.py((?: --\w+=[^\s`|]+)*)")


def _read(name):
    with open(os.path.join(REPO_ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def _written_commands(text):
    """The settings of each `python train.py ...` written out in full."""
    return [FLAG.findall(match.group(1)) for match in TRAIN_COMMAND.finditer(text)]


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


@pytest.mark.parametrize("name", DOCS)
def test_documented_training_commands_are_accepted(name):
    text = _read(name)
    commands = _written_commands(text) + _table_commands(text)
    assert len(commands) >= 5, f"found too few commands in {name}: the parser is broken"
    for argv in commands:
        try:
            get_config(argv)
        except ValueError as error:
            pytest.fail(f"{name}: python train.py {' '.join(argv)}: {error}")


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
