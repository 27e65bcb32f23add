"""Shared test set-up: the project root on sys.path, where the real datasets live, and
small class-folder trees to train on."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope="session", autouse=True)
def image_cache_in_a_temporary_folder(tmp_path_factory):
    """The image cache of every run the tests start, and of the processes they start,
    in a folder of the test session (image_cache.default_dir), not ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def shared_data_path():
    """$SIAMESE_DATA_DIR, else ../shared/data beside the repository."""
    return os.environ.get("SIAMESE_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared",
                                                              "data")


@pytest.fixture(scope="session")
def shared_data_dir():
    """The folder holding the real datasets; skips the test when it is absent."""
    path = os.path.abspath(shared_data_path())
    if not os.path.isdir(path):
        pytest.skip(f"real datasets not found at {path}: set SIAMESE_DATA_DIR to the "
                    f"folder that holds att_faces/ (and other datasets) to run this test")
    return path


@pytest.fixture(scope="session")
def att_faces_dir(shared_data_dir):
    """The AT&T faces (s1..s40 folders of PGM files); skips when they are absent."""
    path = os.path.join(shared_data_dir, "att_faces")
    if not os.path.isdir(path):
        pytest.skip(f"AT&T faces not found at {path}: put the s1..s40 folders there or "
                    f"set SIAMESE_DATA_DIR to a folder holding att_faces/")
    return path


@pytest.fixture(scope="session")
def omniglot_dir(shared_data_dir):
    """Omniglot's background set (<alphabet>/<character>/*.png); skips when absent."""
    path = os.path.join(shared_data_dir, "omniglot", "images_background")
    if not os.path.isdir(path):
        pytest.skip(f"Omniglot not found at {path}: put images_background there or set "
                    f"SIAMESE_DATA_DIR to a folder holding omniglot/images_background/")
    return path


# The contrastive loss on pairs, with no random distortions: the recipe of the small
# runs that the evaluate, predict and resume tests train, whatever a preset holds.
PAIR_RECIPE = dict(pairing="pairs", loss="contrastive", augment=False, monitor="val_loss")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small trained run on 12 generated people (write_class_folders), shared by
    the evaluate.py and predict.py tests."""
    import train
    from configurator import get_config
    data = write_class_folders(tmp_path_factory.mktemp("data"), 12)
    config = get_config(dataset="folder", data_dir=str(data), channels=1,
                        image_size=(24, 24), architecture="digits", epochs=3,
                        total_sample_size=400, batch_size=32, trials=50,
                        out_dir=str(tmp_path_factory.mktemp("runs")), **PAIR_RECIPE)
    return train.train(config)


def write_class_folders(root, n_classes, per_class=5, size=(24, 24), seed=0):
    """Class k: a bright block at its own place, with pixel noise (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    for k in range(n_classes):
        folder = root / f"person{k + 1}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, size, dtype=np.uint8)
            row, column = divmod(k, 4)
            image[row * 6:row * 6 + 6, column * 6:column * 6 + 6] += 180
            Image.fromarray(image).save(folder / f"{i + 1}.png")
    return root


def copy_run_with_its_data(run_dir, tmp_path):
    """A copy of the run folder whose config.json points at a copy of its data."""
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    shutil.copytree(config["data_dir"], data)
    (run / "config.json").write_text(json.dumps(dict(config, data_dir=str(data))))
    return str(run), data


SMALL_SIZE = (12, 10)  # (height, width) of the synthetic images of save_image


def save_image(path, value=100, size=SMALL_SIZE, mode="L"):
    """A small image of one grey value (or colour) at `path`, folders made as needed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (size[1], size[0]), value).save(path)
    return str(path)


def numbered_class_folders(root, images_per_class, size=SMALL_SIZE):
    """Class folders c1, c2, ... holding the given numbers of PNG images."""
    for k, n in enumerate(images_per_class):
        for i in range(n):
            save_image(os.path.join(root, f"c{k + 1}", f"{i + 1}.png"), 20 * k + i, size)
    return str(root)


def load_with_warnings(*args, **kwargs):
    """(ImageSet, [warning texts]) of prepare_data.load_folder(*args, **kwargs)."""
    import warnings

    from prepare_data import load_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imageset = load_folder(*args, **kwargs)
    return imageset, [str(w.message) for w in caught]
