"""Run folders: create them without overwriting, write files atomically, reload them."""
import json
import os
import time
import zipfile

RUN_FILES = ("config.json", "model.keras", "embedding.keras", "model.weights.h5",
             "model_architecture.json")


def new_run_dir(out_dir, name):
    """A fresh folder out_dir/<name>-<date>-<time>[-N]; an existing run is never reused."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create out_dir {out_dir!r} ({error.strerror}): pass "
                      f"--out_dir=PATH to a folder you can write to") from error
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"out_dir {out_dir!r} is not writable: pass "
                              f"--out_dir=PATH to a folder you can write to")
    stem = os.path.join(out_dir, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    for attempt in range(1000):
        path = stem if attempt == 0 else f"{stem}-{attempt}"
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {out_dir!r}")


def read_history(path):
    """history.csv (written by Keras' CSVLogger) as {column: [float per epoch]}."""
    import csv

    history = {}
    if os.path.isfile(path):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key != "epoch":
                        history.setdefault(key, []).append(float(value))
    return history


def write_history(path, history):
    """{column: [value per epoch]} (a Keras History.history) as a CSV like
    CSVLogger's, one row per epoch."""
    import csv

    columns = sorted(history)

    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch"] + columns)
            for epoch, row in enumerate(zip(*(history[k] for k in columns))):
                writer.writerow([epoch, *row])
    atomic_write(path, write)


def backup_epoch(backup_dir):
    """How many epochs the backup of Keras' BackupAndRestore in `backup_dir` holds
    (the epoch a resumed fit starts from), or 0 when there is none."""
    path = os.path.join(backup_dir, "training_metadata.json")
    metadata = read_json(path, default={})
    epoch = metadata.get("epoch", 0) if isinstance(metadata, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"{path} is damaged (no epoch count in it): restore it, or "
                         f"start a new run")
    return epoch


def best_logged(history, key, mode):
    """The best value of `key` logged so far (max or min by mode), or None."""
    values = history.get(key)
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def best_epoch(history, key, mode):
    """The 1-based epoch of the best logged value of `key` (the first, on ties)."""
    return history[key].index(best_logged(history, key, mode)) + 1


def atomic_write(path, write):
    """Call write(temporary_path), then rename onto `path`: never a half-written file."""
    base, extension = os.path.splitext(path)
    if base.endswith(".weights"):  # Keras insists on the .weights.h5 ending
        base, extension = base[:-len(".weights")], ".weights" + extension
    temporary = f"{base}.tmp{extension}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno is not None and error.filename is None:
            error.filename = path  # "No space left on device: 'runs/x/model.keras'"
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, data):
    def write(temporary):
        with open(temporary, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
    atomic_write(path, write)


def read_json(path, default=None):
    """A JSON file's content, or `default` when the file does not exist."""
    if not os.path.isfile(path):
        return default
    with open(path, "rb") as handle:
        try:
            return json.load(handle)
        except ValueError as error:  # not JSON, or not UTF-8 text
            raise ValueError(f"{path} is damaged ({error}): restore it, or retrain with "
                             f"this version of the project") from error


def read_config(run_dir):
    """The config a run was trained with (config.json), checked to be there."""
    path = os.path.join(run_dir, "config.json")
    if os.path.isfile(run_dir):
        raise NotADirectoryError(f"{run_dir!r} is a file, not a run folder: pass the "
                                 f"folder that train.py printed at the end")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir!r} does not exist: pass the folder "
                                f"that train.py printed at the end")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {run_dir!r} is not a finished run "
                                f"folder of train.py")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds no settings: it comes from another version of "
                         f"this project, or is damaged; retrain with this version")
    if isinstance(config.get("image_size"), list):
        config["image_size"] = tuple(config["image_size"])
    return config


def trained_classes(run_dir, config):
    """The class names of each part of the split a run was trained on: config.json's
    "classes", or for runs older than that key, metrics.json's lists; None if neither
    has them."""
    if "classes" in config:
        return config["classes"]
    written = read_json(os.path.join(run_dir, "metrics.json"), default={})
    if written.get("refit_epochs"):  # its lists are of the refit's merged split
        return None
    if all(f"{part}_classes" in written for part in ("train", "val", "test")):
        return {part: written[f"{part}_classes"] for part in ("train", "val", "test")}
    return None


def load_models(run_dir):
    """(pair model, embedding model) from a run folder, loaded with safe mode on."""
    import siamese_network_funcs  # noqa: F401  (registers the custom layers)
    import keras

    models = []
    for name in ("model.keras", "embedding.keras"):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: retrain, or pass a complete "
                                    f"run folder")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is damaged (not a .keras zip archive): retrain, "
                             f"or restore the file")
        try:
            models.append(keras.models.load_model(path, safe_mode=True))
        except (ValueError, TypeError, OSError) as error:
            raise ValueError(f"cannot load {path} ({error}); it may come from another "
                             f"version of this project: retrain with this version") from error
    return tuple(models)
