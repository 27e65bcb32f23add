"""Shared test set-up: the project root on sys.path, and where the real datasets live."""
import os
import sys

import pytest

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
