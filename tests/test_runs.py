"""runs: new run folders never reuse an old one; files are written atomically, so a full
disk keeps the previous file."""
import errno
import json
import os

import pytest

import runs


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    out_dir = tmp_path / "out" / "nested"  # created on demand
    made = [runs.new_run_dir(str(out_dir), "digits") for _ in range(3)]
    assert len(set(made)) == 3
    for path in made:
        assert os.path.isdir(path) and not os.listdir(path)
        assert os.path.dirname(path) == str(out_dir)
        assert os.path.basename(path).startswith("digits-")


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    target = tmp_path / "model.weights.h5"
    target.write_bytes(b"old")
    seen = []

    def failing(temporary):
        seen.append(temporary)
        with open(temporary, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        runs.atomic_write(str(target), failing)
    assert target.read_bytes() == b"old"
    assert seen[0].endswith(".weights.h5")  # Keras needs this ending
    assert sorted(os.listdir(tmp_path)) == ["model.weights.h5"]


def test_write_json_and_read_config_round_trip(tmp_path):
    config = {"image_size": (105, 105), "epochs": 3, "data_dir": "x"}
    runs.write_json(str(tmp_path / "config.json"), config)
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 3
    assert runs.read_config(str(tmp_path)) == config
    assert os.listdir(tmp_path) == ["config.json"]


def test_read_config_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_run"):
        runs.read_config(str(tmp_path / "missing_run"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        runs.read_config(str(tmp_path))


def test_load_models_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras"):
        runs.load_models(str(tmp_path))


def test_write_history_reads_back_one_row_per_epoch(tmp_path):
    history = {"loss": [0.5, 0.25, 0.125], "learning_rate": [0.001, 0.001, 0.0005]}
    path = str(tmp_path / "refit_history.csv")
    runs.write_history(path, history)
    assert runs.read_history(path) == history
    with open(path) as handle:
        assert handle.readline().strip() == "epoch,learning_rate,loss"



@pytest.mark.parametrize("mode, values, expected", [
    ("max", [0.5, 0.75, 0.75, 0.25], 2),  # the first of two best epochs
    ("min", [0.5, 0.25, 0.25, 0.75], 2),
])
def test_best_epoch_is_one_based_and_takes_the_first_of_ties(mode, values, expected):
    assert runs.best_epoch({"val_oneshot": values}, "val_oneshot", mode) == expected


@pytest.mark.parametrize("content, expected", [
    (None, 0),  # no backup yet: interrupted inside the first epoch
    ('{"epoch": 3, "batch": 0}', 3),
])
def test_backup_epoch_reads_the_epochs_keras_backup_holds(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "training_metadata.json").write_text(content)
    assert runs.backup_epoch(str(tmp_path)) == expected


@pytest.mark.parametrize("content", ['{"epoch": "3"}', '{"epoch": -1}', "[3]", "{"])
def test_a_damaged_backup_epoch_names_the_file(tmp_path, content):
    (tmp_path / "training_metadata.json").write_text(content)
    with pytest.raises(ValueError, match="training_metadata.json"):
        runs.backup_epoch(str(tmp_path))


# --- disk full --------------------------------------------------------------------------

def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_disk_full(temporary):
    with open(temporary, "w") as handle:
        handle.write('{"epo')
    _disk_full()


@pytest.mark.parametrize("failing", ["while writing", "while renaming"])
def test_disk_full_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, failing):
    target = tmp_path / "config.json"
    runs.write_json(str(target), {"epochs": 1})
    with pytest.raises(OSError) as error:
        if failing == "while writing":
            runs.atomic_write(str(target), _half_then_disk_full)
        else:
            monkeypatch.setattr(runs.os, "replace", _disk_full)
            runs.write_json(str(target), {"epochs": 2})
    assert error.value.errno == errno.ENOSPC
    assert str(error.value) == f"[Errno 28] No space left on device: {str(target)!r}"
    assert json.loads(target.read_text()) == {"epochs": 1}
    assert os.listdir(tmp_path) == ["config.json"]
