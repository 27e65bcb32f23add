"""Bad data gets clear errors: every message names the file, folder or setting at fault
and says how to fix it; files that cannot be used are skipped with a warning naming them.

Already covered elsewhere (not repeated here): missing, empty ("") and class-less
data_dir (test_prepare_data), a missing data_dir from the CLI (test_train), an
unreadable image among good ones (test_prepare_data), mixed sizes needing image_size
(test_prepare_data), a missing query image (test_predict), read_config/load_models
errors called directly (test_runs), atomic_write cleaning up after a failing write
(test_runs), --ways larger than a group (test_metrics).
"""
import errno
import io
import json
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

import metrics
import predict
import prepare_data
import runs
from configurator import get_config
from prepare_data import build_splits, load_folder

SIZE = (12, 10)  # (height, width) of the synthetic images


def _save(path, value=100, size=SIZE, mode="L"):
    """A small image of one grey value (or colour) at `path`, folders made as needed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (size[1], size[0]), value).save(path)
    return str(path)


def _tree(root, images_per_class, size=SIZE):
    """Class folders c1, c2, ... holding the given numbers of PNG images."""
    for k, n in enumerate(images_per_class):
        for i in range(n):
            _save(os.path.join(root, f"c{k + 1}", f"{i + 1}.png"), 20 * k + i, size)
    return str(root)


def _load_warnings(*args, **kwargs):
    """(ImageSet, [warning texts]) of load_folder(*args, **kwargs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imageset = load_folder(*args, **kwargs)
    return imageset, [str(w.message) for w in caught]


def _folder_config(data_dir, **overrides):
    return get_config(dataset="folder", data_dir=str(data_dir), image_size=SIZE,
                      channels=1, total_sample_size=50, **overrides)


# --- 1. data_dir ------------------------------------------------------------------------

def test_data_dir_that_is_a_file_says_so(tmp_path):
    a_file = tmp_path / "faces.zip"
    a_file.write_bytes(b"PK\x03\x04")
    with pytest.raises(NotADirectoryError, match="faces.zip.* is a file"):
        load_folder(str(a_file))


def test_unreadable_sub_folder_is_named_not_silently_dropped(tmp_path, monkeypatch):
    root = _tree(tmp_path / "data", [2, 2, 2])
    locked = os.path.join(root, "c2")
    scandir = os.scandir

    def no_permission(path):  # what a folder without read permission does
        if os.path.abspath(path) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return scandir(path)
    monkeypatch.setattr(os, "scandir", no_permission)
    imageset, caught = _load_warnings(root)
    assert imageset.class_names == ["c1", "c3"]
    assert caught == [f"skipping unreadable folder {locked}: Permission denied"]
    with pytest.raises(ValueError, match="unreadable folder .*c2: Permission denied"):
        load_folder(root, strict=True)


# --- 2. classes with a single image -----------------------------------------------------

def test_single_image_class_is_skipped_with_a_warning_naming_it(tmp_path):
    root = _tree(tmp_path / "data", [3, 1, 2])
    imageset, caught = _load_warnings(root, min_images_per_class=2)
    assert imageset.class_names == ["c1", "c3"]
    assert np.bincount(imageset.labels).tolist() == [3, 2]
    lonely = os.path.join(root, "c2")
    assert caught == [f"skipping class folder {lonely}: it holds 1 readable image(s) and "
                      f"a class needs at least 2"]


def test_training_data_skips_single_image_classes(tmp_path):
    """load_dataset, what train.py calls, asks for 2 images per class."""
    root = _tree(tmp_path / "data", [2, 1, 2, 2])
    with pytest.warns(UserWarning, match="class folder .*c2"):
        imageset = prepare_data.load_dataset(_folder_config(root))
    assert imageset.class_names == ["c1", "c3", "c4"]


def test_a_class_left_with_one_readable_image_is_skipped_too(tmp_path):
    root = _tree(tmp_path / "data", [2, 2, 2])
    (tmp_path / "data" / "c3" / "2.png").write_bytes(b"")  # zero bytes: unreadable
    imageset, caught = _load_warnings(root, min_images_per_class=2)
    assert imageset.class_names == ["c1", "c2"]
    assert any("c3" in text and "holds 1 readable" in text for text in caught)


def test_too_few_classes_left_for_the_split_is_an_error_naming_the_settings(tmp_path):
    root = _tree(tmp_path / "data", [2, 1, 2, 1, 2, 2, 1])  # 4 usable classes of 7
    with pytest.warns(UserWarning):
        imageset = prepare_data.load_dataset(_folder_config(root))
    assert len(imageset.class_names) == 4
    with pytest.raises(ValueError) as error:
        build_splits(imageset, _folder_config(root))
    assert str(error.value) == (
        "4 classes are too few for test_fraction=0.2 and val_fraction=0.2: each part "
        "needs at least 2 classes. Lower --test_fraction and --val_fraction, use "
        "--split=pairs, or a dataset with at least 6 classes")

    root = _tree(tmp_path / "data2", [3, 1])
    with pytest.warns(UserWarning):
        imageset = prepare_data.load_dataset(_folder_config(root, split="pairs"))
    with pytest.raises(ValueError, match="1 class found: a Siamese network needs"):
        build_splits(imageset, _folder_config(root, split="pairs"))


def test_class_rotations_of_non_square_images_is_an_error_saying_what_to_set(
        tmp_path, capsys):
    import train
    root = _tree(tmp_path / "data", [4] * 6, size=(32, 30))
    assert train.main(["--dataset=folder", f"--data_dir={root}", "--image_size=32,30",
                       "--channels=1", "--pairing=batch", "--loss=triplet",
                       "--class_rotations=True", f"--out_dir={tmp_path / 'runs'}"]) == 2
    error = capsys.readouterr().err
    assert "must be square, but these are 32x30" in error
    assert "--image_size=S,S" in error and "Traceback" not in error
    assert not (tmp_path / "runs").exists()  # no empty run folder left behind


def test_images_too_small_for_the_architecture_is_an_error_naming_both(tmp_path, capsys):
    import train
    root = _tree(tmp_path / "data", [3] * 6)  # 12x10 images; compact needs 16x16
    assert train.main(["--dataset=folder", f"--data_dir={root}", "--image_size=12,10",
                       "--channels=1", f"--out_dir={tmp_path / 'runs'}"]) == 2
    error = capsys.readouterr().err
    assert ("images of 12x10 pixels are too small for architecture='compact', which "
            "needs at least 16x16: set a larger --image_size") in error
    assert not (tmp_path / "runs").exists()


def test_only_single_image_classes_is_an_error_naming_the_folder(tmp_path):
    root = _tree(tmp_path / "lonely_data", [1, 1, 1])
    with pytest.warns(UserWarning), pytest.raises(ValueError) as error:
        prepare_data.load_dataset(_folder_config(root))
    assert str(error.value).startswith(f"no class folder in {root!r} holds 2 or more "
                                       f"readable images")


def test_too_few_classes_for_n_way_one_shot_says_how_many_there_are():
    labels = np.repeat(np.arange(3), 2)
    with pytest.raises(ValueError) as error:
        metrics.make_oneshot_trials(labels, np.arange(3), 5, 10, np.random.default_rng(0))
    assert str(error.value) == ("5-way one-shot needs 5 classes to choose from, but "
                                "there are only 3 evaluation classes: use --ways=3 or "
                                "fewer")
    with pytest.raises(ValueError, match="no evaluation class has two images"):
        metrics.make_oneshot_trials(np.arange(3), np.arange(3), 3, 10,
                                    np.random.default_rng(0))


# --- 3. corrupt and non-image files -----------------------------------------------------

def _png_bytes():
    noise = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


BROKEN_FILES = {
    "zero_bytes.png": b"",
    "truncated.png": _png_bytes()[:300],
    "truncated.jpg": _jpeg_bytes()[:len(_jpeg_bytes()) // 2],
    "text_renamed.jpg": b"this is a text file, not a JPEG",
    "png_named.gif": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,  # broken after the signature
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_image_is_skipped_with_a_warning_naming_it_or_strict_raises(tmp_path,
                                                                           name):
    root = _tree(tmp_path / "data", [3, 3])
    broken = tmp_path / "data" / "c1" / name
    broken.write_bytes(BROKEN_FILES[name])
    imageset, caught = _load_warnings(root)
    assert len(imageset.paths) == 6 and str(broken) not in imageset.paths
    assert [text for text in caught if str(broken) in text]
    assert all(text.startswith(f"skipping unreadable image {broken}: ")
               for text in caught)
    with pytest.raises(ValueError) as error:
        load_folder(root, strict=True)
    assert str(error.value).startswith(f"unreadable image {broken}: ")
    assert "fix or remove it" in str(error.value)


def test_image_claiming_a_huge_size_is_skipped_not_a_crash(tmp_path, monkeypatch):
    """A forged header (a decompression bomb) raises DecompressionBombError, which is
    no OSError: it must be skipped like any unreadable file, not end the run."""
    root = _tree(tmp_path / "data", [2, 2])
    bomb = _save(tmp_path / "data" / "c2" / "bomb.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 12x10 is fine, 40x40 is not
    imageset, caught = _load_warnings(root)
    assert bomb not in imageset.paths and len(imageset.paths) == 4
    assert [text for text in caught if bomb in text and "exceeds limit" in text]


def test_non_image_files_in_class_folders_are_named_hidden_and_system_files_not(
        tmp_path):
    root = _tree(tmp_path / "data", [2, 2])
    data = tmp_path / "data"
    (data / "README.txt").write_text("dataset notes")  # beside the classes: fine
    (data / "c1" / "notes.txt").write_text("who is who")
    (data / "c2" / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "._1.png"):
        (data / "c1" / junk).write_bytes(b"\x00\x01junk")
    (data / "only_heic").mkdir()  # a whole person in a format not read: not silent
    (data / "only_heic" / "1.heic").write_bytes(b"\x00")

    imageset, caught = _load_warnings(root)
    assert imageset.class_names == ["c1", "c2"] and len(imageset.paths) == 4
    named = sorted(os.path.relpath(text.split(": ")[0][len("skipping "):], root)
                   for text in caught)
    assert named == sorted([os.path.join("c1", "notes.txt"),
                            os.path.join("c2", "photo.heic"),
                            os.path.join("only_heic", "1.heic")])
    assert all("not an image file (the extensions read are .pgm .png" in text
               for text in caught)

    with pytest.raises(ValueError, match=r"c1.notes\.txt: not an image file"):
        load_folder(root, strict=True)


def test_strict_loads_a_clean_tree_with_hidden_and_system_files(tmp_path):
    root = _tree(tmp_path / "data", [2, 2])
    (tmp_path / "data" / "c1" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "data" / "c2" / "Thumbs.db").write_bytes(b"\x00")
    imageset, caught = _load_warnings(root, strict=True)
    assert len(imageset.paths) == 4 and caught == []


def test_strict_refuses_a_single_image_class(tmp_path):
    root = _tree(tmp_path / "data", [2, 1, 2])
    with pytest.raises(ValueError) as error:
        load_folder(root, min_images_per_class=2, strict=True)
    assert str(error.value).startswith(f"class folder {os.path.join(root, 'c2')}: it "
                                       f"holds 1 readable image(s)")


def test_strict_setting_reaches_load_folder_through_load_dataset(tmp_path):
    root = _tree(tmp_path / "data", [2, 2])
    broken = tmp_path / "data" / "c1" / "broken.png"
    broken.write_bytes(b"")
    config = dict(_folder_config(root), strict=True)  # the key configs.py will get
    with pytest.raises(ValueError, match="broken.png"):
        prepare_data.load_dataset(config)


# --- 4. sizes, modes and EXIF rotation --------------------------------------------------

GRADIENT_16 = np.linspace(0, 4000, 12 * 10).reshape(SIZE)
MODES = {  # file -> (image, expected grey, expected RGB at the top-left pixel)
    "L.png": (Image.new("L", (10, 12), 80), 80, (80, 80, 80)),
    "RGB.png": (Image.new("RGB", (10, 12), (200, 30, 90)), 88, (200, 30, 90)),
    "RGBA.png": (Image.new("RGBA", (10, 12), (200, 30, 90, 128)), 88, (200, 30, 90)),
    "LA.png": (Image.new("LA", (10, 12), (80, 128)), 80, (80, 80, 80)),
    "P.gif": (Image.new("RGB", (10, 12), (255, 0, 0)).convert("P"), 76, (255, 0, 0)),
    "P.png": (Image.new("RGB", (10, 12), (255, 0, 0)).quantize(4), 76, (255, 0, 0)),
    "1.pbm": (Image.new("1", (10, 12), 1), 255, (255, 255, 255)),
    "CMYK.tif": (Image.new("CMYK", (10, 12), (0, 255, 255, 0)), 76, (255, 0, 0)),
    "I16.png": (Image.fromarray(GRADIENT_16.astype(np.uint16)), 0, (0, 0, 0)),
    "I32.tif": (Image.fromarray(GRADIENT_16.astype(np.int32)), 0, (0, 0, 0)),
    "F.tif": (Image.fromarray((GRADIENT_16 / 4000).astype(np.float32)), 0, (0, 0, 0)),
}


@pytest.mark.parametrize("name", sorted(MODES))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_configured_channels_and_size(tmp_path, name, channels):
    image, grey, rgb = MODES[name]
    path = str(tmp_path / name)
    image.save(path)
    for size, shape in ((None, SIZE), ((6, 5), (6, 5)), ((30, 20), (30, 20))):
        array = prepare_data.load_image(path, size, 1, channels)
        assert array.shape == (*shape, channels) and array.dtype == np.uint8
    array = prepare_data.load_image(path, None, 1, channels)
    expected = [grey] if channels == 1 else list(rgb)
    assert np.abs(array[0, 0].astype(int) - expected).max() <= 1


def _save_pgm_16(path, pixels):
    """A binary 16-bit PGM (maxval 65535), which Pillow opens as mode "I"."""
    height, width = pixels.shape
    with open(path, "wb") as handle:
        handle.write(f"P5\n{width} {height}\n65535\n".encode())
        handle.write(pixels.astype(">u2").tobytes())


@pytest.mark.parametrize("extension", ["png", "tif", "pgm"])
def test_a_16_bit_file_gives_the_pixels_of_the_same_picture_at_8_bits(tmp_path,
                                                                       extension):
    picture = np.random.default_rng(0).integers(0, 256, SIZE).astype(np.uint8)
    picture[0, 0] = 60  # no pixel at full brightness: the scale must not come from it
    picture[picture > 200] = 200
    Image.fromarray(picture).save(tmp_path / "eight.png")
    wide = picture.astype(np.uint16) * 257  # 0..255 -> 0..65535
    path = tmp_path / f"sixteen.{extension}"
    if extension == "pgm":
        _save_pgm_16(path, wide)
    else:
        Image.fromarray(wide).save(path)
    assert Image.open(path).mode in prepare_data.WIDE_MODES
    np.testing.assert_array_equal(prepare_data.load_image(str(path)),
                                  prepare_data.load_image(str(tmp_path / "eight.png")))


@pytest.mark.parametrize("name", ["I16.png", "I32.tif"])
def test_a_dark_16_bit_image_stays_dark(tmp_path, name):
    """0..4000 of 65535 is a dark image: scaled by the format, not stretched to 255."""
    path = str(tmp_path / name)
    MODES[name][0].save(path)
    array = prepare_data.load_image(path)[:, :, 0].astype(int)
    expected = np.round(GRADIENT_16 * 255 / 65535)
    assert np.abs(array - expected).max() <= 1 and array.max() == 16


@pytest.mark.parametrize("top, full_scale", [(1.0, 1.0), (200.0, 255.0),
                                             (4000.0, 65535.0)])
def test_float_images_are_scaled_by_their_range_not_clipped(tmp_path, top, full_scale):
    path = str(tmp_path / "F.tif")
    gradient = GRADIENT_16 / 4000 * top
    Image.fromarray(gradient.astype(np.float32)).save(path)
    array = prepare_data.load_image(path)[:, :, 0].astype(int)
    assert np.abs(array - np.round(gradient * 255 / full_scale)).max() <= 1


@pytest.mark.parametrize("extension", ["png", "jpg"])
def test_exif_orientation_6_is_rotated_upright(tmp_path, extension):
    """Orientation 6 means "rotate 90 degrees clockwise to view": a 4-wide, 2-high
    file with a white top-left pixel is a 2-wide, 4-high image, white at top-right."""
    stored = np.zeros((2, 4), np.uint8)
    stored[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        for i in (1, 2):
            Image.fromarray(stored).save(tmp_path / name / f"{i}.{extension}", exif=exif)
    array = prepare_data.load_image(str(tmp_path / "a" / f"1.{extension}"))
    assert array.shape == (4, 2, 1)
    assert ((array[:, :, 0] > 128).astype(int) == [[0, 1], [0, 0], [0, 0], [0, 0]]).all()
    imageset = load_folder(str(tmp_path))
    assert imageset.images.shape == (4, 4, 2, 1) and imageset.source_size == (4, 2)


@pytest.mark.parametrize("sizes, downsample, named", [
    (((12, 10), (30, 20)), 1, "10x12, {} is 20x30"),
    # the files' own sizes, not those after downsample (46x56 for a 92x112 face)
    (((112, 92), (100, 80)), 2, "92x112, {} is 80x100"),
])
def test_mixed_sizes_error_names_a_file_of_each_size(tmp_path, sizes, downsample,
                                                     named):
    first, other = sizes
    small = _save(tmp_path / "a" / "1.png", size=first)
    _save(tmp_path / "a" / "2.png", size=first)
    large = _save(tmp_path / "b" / "1.png", size=other)
    _save(tmp_path / "b" / "2.png", size=first)
    with pytest.raises(ValueError) as error:
        load_folder(str(tmp_path), downsample=downsample)
    expected = f"{small} is " + named.format(large) + ", width x height"
    assert expected in str(error.value)
    assert "--image_size=" in str(error.value)


def test_mixed_sizes_and_modes_become_one_array_at_image_size(tmp_path):
    _save(tmp_path / "a" / "1.png", 50, size=(30, 20))
    _save(tmp_path / "a" / "2.gif", 60, size=(7, 9), mode="P")
    _save(tmp_path / "b" / "1.jpg", (10, 200, 30), size=(64, 48), mode="RGB")
    _save(tmp_path / "b" / "2.png", (10, 200, 30, 0), size=(5, 5), mode="RGBA")
    _save(tmp_path / "b" / "3.pbm", 1, mode="1")
    imageset = load_folder(str(tmp_path), image_size=(16, 16), channels=3)
    assert imageset.images.shape == (5, 16, 16, 3) and imageset.source_size == (16, 16)


# --- 5. predict.py on damaged run folders, galleries and queries ------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (tiny, 1-epoch) digits run: the model files predict.py needs."""
    import train
    out = tmp_path_factory.mktemp("runs")
    return train.train(get_config(dataset="digits", out_dir=str(out), epochs=1,
                                  total_sample_size=200,
                                  batch_size=32, trials=20))


@pytest.fixture
def images(tmp_path):
    """A query image and a small gallery of two people."""
    query = _save(tmp_path / "query.png", 120, size=(8, 8))
    for person, value in (("alice", 30), ("bob", 220)):
        for i in (1, 2):
            _save(tmp_path / "gallery" / person / f"{i}.png", value + i, size=(8, 8))
    return query, str(tmp_path / "gallery")


def _copy_run(run_dir, tmp_path, **files):
    """A copy of the run with files replaced (bytes) or removed (None)."""
    copy = str(tmp_path / "damaged_run")
    shutil.copytree(run_dir, copy)
    for name, content in files.items():
        path = os.path.join(copy, name)
        if content is None:
            os.remove(path)
        else:
            with open(path, "wb") as handle:
                handle.write(content)
    return copy


def _cli_error(capsys, argv):
    """predict.main(argv) must return 2 and print one 'error: ...' line, no traceback."""
    assert predict.main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err[len("error: "):].strip()


DAMAGE = {  # what is wrong -> (files changed, the start of the message after the path)
    "model.keras missing": ({"model.keras": None},
                            "model.keras is missing: retrain, or pass a complete run"),
    "embedding.keras missing": ({"embedding.keras": None},
                                "embedding.keras is missing: retrain"),
    "model.keras not a model": ({"model.keras": b"junk"},
                                "model.keras is damaged (not a .keras zip archive)"),
    "config.json not JSON": ({"config.json": b"{garbage"}, "config.json is damaged ("),
    "config.json not text": ({"config.json": b"\xff\xfe\x00\xd8junk"},
                             "config.json is damaged ("),
    "config.json a list": ({"config.json": b"[1, 2]"},
                           "config.json holds no settings: it comes from another"),
    "config.json empty dict": ({"config.json": b"{}"},
                               "config.json lacks channels, downsample, margin, "
                               "source_size: it comes from another version of this "
                               "project; retrain with this version"),
    "evaluation.json not JSON": ({"evaluation.json": b"nan nan"},
                                 "evaluation.json is damaged ("),
    "evaluation.json threshold not a number": (
        {"evaluation.json": b'{"threshold": "0.5x"}'},
        "evaluation.json holds threshold='0.5x', not a number: restore it, or rerun "
        "python evaluate.py --run_dir="),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_run_folder_is_a_clear_cli_error_naming_the_file(run_dir, tmp_path,
                                                                 capsys, images, damage):
    files, expected = DAMAGE[damage]
    damaged = _copy_run(run_dir, tmp_path, **files)
    message = _cli_error(capsys, ["verify", damaged, images[0], images[0]])
    name = expected.split(" ")[0]
    assert os.path.join(damaged, name) in message
    assert expected in message


def test_missing_run_folder_is_a_clear_cli_error(tmp_path, capsys, images):
    missing = str(tmp_path / "no_such_run")
    assert _cli_error(capsys, ["verify", missing, images[0], images[0]]) == (
        f"run folder {missing!r} does not exist: pass the folder that train.py printed "
        f"at the end")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert _cli_error(capsys, ["verify", str(a_file), images[0], images[0]]) == (
        f"{str(a_file)!r} is a file, not a run folder: pass the folder that train.py "
        f"printed at the end")


def test_config_from_an_older_version_without_distance_still_works(run_dir, tmp_path,
                                                                   images):
    with open(os.path.join(run_dir, "config.json")) as handle:
        config = json.load(handle)
    del config["distance"]  # written only since Koch's head was added
    old = _copy_run(run_dir, tmp_path, **{"config.json": json.dumps(config).encode(),
                                          "evaluation.json": None})
    with pytest.warns(UserWarning, match="no evaluation.json: deciding by the write-ups'"):
        matcher = predict.Matcher(old)
    assert matcher.threshold == config["margin"] / 2
    assert matcher.verify(images[0], images[0])["same"]


@pytest.mark.parametrize("kind", ["missing", "empty", "a file", "no class folders"])
def test_unusable_gallery_is_a_clear_cli_error_naming_it(run_dir, tmp_path, capsys,
                                                         images, kind):
    gallery = tmp_path / f"gallery_{kind.replace(' ', '_')}"
    if kind == "empty":
        gallery.mkdir()
    elif kind == "a file":
        gallery.write_text("")
    elif kind == "no class folders":
        _save(gallery / "alice.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = _cli_error(capsys, ["identify", run_dir, images[0],
                                      f"--gallery={gallery}"])
    # a photo at the gallery's top is named, not silently dropped
    assert ["alice.png" in str(w.message) for w in caught] == \
        [True] * (kind == "no class folders")
    if kind in ("missing", "a file"):
        assert message == (f"gallery {str(gallery)!r} is not a folder: pass "
                           f"--gallery=DIR, a folder with one sub-folder of images per "
                           f"person or class")
    else:
        assert message.startswith(f"no class folders found in {str(gallery)!r}: expected "
                                  f"one sub-folder per class")


@pytest.mark.parametrize("kind", ["missing", "a folder", "truncated", "not an image"])
def test_unusable_query_is_a_clear_cli_error_naming_it(run_dir, tmp_path, capsys, images,
                                                       kind):
    query = tmp_path / "query_file.png"
    if kind == "a folder":
        query.mkdir()
    elif kind == "truncated":
        query.write_bytes(_png_bytes()[:300])
    elif kind == "not an image":
        query.write_text("hello")
    expected = {"missing": f"image {str(query)!r} does not exist",
                "a folder": f"image {str(query)!r} is a folder, not an image file",
                "truncated": f"cannot read image {str(query)!r} (image file is "
                             f"truncated): replace or remove it",
                "not an image": f"cannot read image {str(query)!r} (cannot identify "
                                f"image file"}[kind]
    message = _cli_error(capsys, ["identify", run_dir, str(query),
                                  f"--gallery={images[1]}"])
    assert message.startswith(expected)
    message = _cli_error(capsys, ["verify", run_dir, images[0], str(query)])
    assert message.startswith(expected)


# --- 6. safety: no unpickling, no shell -------------------------------------------------

class _Payload:
    """Unpickling this would create the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_pickled_npz(path, marker):
    stamps = np.array([_Payload(marker)], dtype=object)
    np.savez(path, stamps=stamps, embeddings=np.zeros((1, 4)))


def _write_bytes(data):
    def write(path, marker):
        with open(path, "wb") as handle:
            handle.write(data(marker) if callable(data) else data)
    return write


def _write_npy(path, marker):
    with open(path, "wb") as handle:  # np.save(name) would add ".npy"
        np.save(handle, np.zeros(3))


CACHES = {  # what the cache file holds -> how to write it
    "pickled objects": _write_pickled_npz,
    "a pickle stream": _write_bytes(lambda marker: pickle.dumps(_Payload(marker))),
    "garbage": _write_bytes(b"not a cache"),
    "empty": _write_bytes(b""),
    "truncated zip": _write_bytes(b"PK\x03\x04" + b"0" * 50),
    "a plain .npy": _write_npy,
    "other arrays": lambda path, marker: np.savez(path, something=np.zeros(2)),
    "mismatched arrays": lambda path, marker: np.savez(
        path, stamps=np.array(["a", "b"]), embeddings=np.zeros((3, 4))),
}


@pytest.mark.parametrize("kind", sorted(CACHES))
def test_bad_gallery_cache_is_never_unpickled_and_is_rebuilt(run_dir, tmp_path, images,
                                                            kind):
    query, gallery = images
    matcher = predict.Matcher(run_dir)
    expected = matcher.gallery(gallery)[0]
    cache = os.path.join(gallery, f".siamese-cache-{matcher.model_id}.npz")
    marker = str(tmp_path / "UNPICKLED")
    CACHES[kind](cache, marker)

    with pytest.warns(UserWarning) as caught:
        embeddings, owners, _ = matcher.gallery(gallery)
    assert not os.path.exists(marker)
    warned = f"ignoring the unreadable gallery cache {cache} ("
    assert [w for w in caught if str(w.message).startswith(warned)]
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    assert owners == ["alice", "alice", "bob", "bob"]
    with np.load(cache, allow_pickle=False) as saved:  # rewritten, plain arrays
        assert saved["stamps"].dtype.kind == "U" and len(saved["embeddings"]) == 4
    [result] = matcher.identify([query], gallery)
    assert result["top"][0][0] in ("alice", "bob")


SHELL_LIKE = "O'Brien \"Bob\"; touch PWNED $(touch PWNED2) `touch PWNED3` & |x"


def test_names_with_spaces_quotes_and_semicolons_load_and_never_reach_a_shell(
        run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "my data; rm -rf ~"
    for person in (SHELL_LIKE, "plain"):
        for i in (1, 2):
            _save(data / person / f"photo {i}; 'x' \"y\" $(z).png", 40 * i, size=(8, 8))
    imageset, caught = _load_warnings(str(data))
    assert sorted(imageset.class_names) == sorted([SHELL_LIKE, "plain"])
    assert len(imageset.paths) == 4 and caught == []

    query = str(data / SHELL_LIKE / "photo 1; 'x' \"y\" $(z).png")
    assert predict.main(["identify", run_dir, query, f"--gallery={data}"]) == 0
    threshold_line, answer = capsys.readouterr().out.splitlines()
    assert threshold_line.startswith("threshold ") and answer.startswith(f"{query}: ")
    assert predict.main(["verify", run_dir, query, query]) == 0
    assert capsys.readouterr().out.startswith("same: distance")
    assert os.listdir(tmp_path) == ["my data; rm -rf ~"]  # no PWNED file anywhere


# --- 7. disk full -----------------------------------------------------------------------

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


def test_project_warnings_print_as_one_line():
    import warnings

    import tf_setup  # noqa: F401  (the entry scripts import it, through siamese_network_funcs)
    assert (warnings.formatwarning("skipping a/notes.txt: not an image file", UserWarning,
                                   "prepare_data.py", 50)
            == "warning: skipping a/notes.txt: not an image file\n")
    other = warnings.formatwarning("old API", DeprecationWarning, "lib.py", 7)
    assert "DeprecationWarning" in other and "lib.py:7" in other


@pytest.mark.parametrize("setting", [dict(data_dir="my_photos"), dict(image_size=(16, 16)),
                                     dict(channels=3), dict(max_images_per_class=5)])
def test_built_in_datasets_refuse_folder_settings_they_would_ignore(tmp_path, setting):
    # Before, `python train.py --data_dir=my_photos` trained on the digits without a
    # word, and --image_size or --channels were saved but not used, so predict.py
    # later expected images of another shape.
    config = get_config(dataset="digits", out_dir=str(tmp_path), **setting)
    with pytest.raises(ValueError, match="dataset='digits' is built in .* would be "
                                         "ignored: for a folder of your own use "
                                         "--dataset=folder"):
        prepare_data.load_dataset(config)
    assert prepare_data.load_dataset(dict(config, data_dir="", image_size=None,
                                          channels=1, max_images_per_class=0,
                                          downsample=2)).images.shape[1:] == (4, 4, 1)


def test_images_directly_in_data_dir_are_named_not_silently_dropped(tmp_path):
    root = _tree(tmp_path / "data", [2, 2])
    _save(tmp_path / "data" / "stray.png")
    (tmp_path / "data" / "README.txt").write_text("notes beside the classes: fine")
    imageset, texts = _load_warnings(root)
    assert imageset.class_names == ["c1", "c2"]
    assert texts == [f"skipping 1 image(s) directly in {root} (e.g. stray.png): they "
                     f"belong to no class; a class is a folder of images, so move them "
                     f"into one"]
