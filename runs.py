"""Run folders: create them without overwriting, write files atomically, reload them."""
import json
import os
import time
import zipfile

import prepare_data

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


def resume_state(run_dir, epochs):
    """(history, epochs done) of the interrupted run in `run_dir`, to continue it for
    `epochs` in all. An epoch logged after the last backup (Ctrl-C between the two) is
    trained again, so its history.csv row goes. Raises ValueError when the run has
    nothing to resume from, or when `epochs` leaves nothing to continue."""
    history_csv = os.path.join(run_dir, "history.csv")
    history = read_history(history_csv)
    backup = os.path.join(run_dir, "backup")
    if history and not os.path.isdir(backup):
        raise ValueError(f"{run_dir} has no backup/ folder to resume from: its training "
                         f"finished. Evaluate it with python evaluate.py "
                         f"--run_dir={run_dir}, or start a new run")
    done = backup_epoch(backup)
    if len(history.get("loss", [])) > done:
        history = {key: values[:done] for key, values in history.items()}
        write_history(history_csv, history)
    if epochs < done:
        raise ValueError(f"{run_dir} has already trained {done} epochs, so "
                         f"--epochs={epochs} leaves nothing to continue: give "
                         f"--epochs={done + 1} or more")
    print(f"resuming {run_dir} after epoch {done}"
          + (" (all its epochs: finishing the run)" if done == epochs else ""))
    return history, done


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


def check_same_classes(imageset, splits, trained, data_dir):
    """Raise ValueError unless `splits` has the classes of each part that a run was
    trained with (`trained`, as class_names_by_part gave them then).

    The split is drawn again from the folder as it is now: with class folders added
    or removed since training it is another split, and would report classes the
    network trained on as unseen.
    """
    now = prepare_data.class_names_by_part(imageset, splits)
    if all(sorted(now[part]) == sorted(trained.get(part, [])) for part in now):
        return
    before = {name for names in trained.values() for name in names}
    after = set(imageset.class_names)
    changes = [f"{what}: {', '.join(sorted(names)[:5])}"
               + (f" and {len(names) - 5} more" if len(names) > 5 else "")
               for what, names in (("added", after - before), ("gone", before - after))
               if names]
    raise ValueError(
        f"the class folders in {data_dir!r} are not those the run was trained on "
        f"({'; '.join(changes) or 'the same names, split otherwise'}), so its split "
        f"would be drawn anew and could count training classes as unseen. Restore the "
        f"folder as it was, or evaluate new classes as another folder "
        f"(evaluate.py --data_dir=A_FOLDER_OF_THEM)")


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
