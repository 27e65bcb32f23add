"""Shared test set-up: the project root on sys.path, where the real datasets live, and
small class-folder trees to train on."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


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
