"""prepare_data: class folders -> one uint8 image array -> balanced labelled pairs.

Bad data gets clear errors: every message names the file, folder or setting at fault and
says how to fix it; files that cannot be used are skipped with a warning naming them.
"""
import errno
import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import prepare_data
import samplers
from configurator import get_config
from conftest import SMALL_SIZE, load_with_warnings, numbered_class_folders, save_image
from prepare_data import (build_splits, load_folder, make_pairs, pair_dataset,
                          scan_class_folders, split_classes)

HEIGHT, WIDTH = 12, 10
# class folder -> file extension of its images (mixed formats, one nested class).
CLASS_FORMATS = {"s1": ".png", "s2": ".pgm", "s10": ".jpg", "s3": ".png",
                 "alpha/char1": ".png"}
EXPECTED_CLASSES = ["alpha/char1", "s1", "s2", "s3", "s10"]  # natural order
IMAGE_NAMES = ["1", "2", "3", "10"]  # natural order 1, 2, 3, 10 (not 1, 10, 2, 3)


def _save_grey(path, value, size=(WIDTH, HEIGHT)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("L", size, color=int(value)).save(path)


@pytest.fixture
def class_tree(tmp_path):
    """5 classes x 4 images, each image one known grey value; returns (root, values)."""
    root = tmp_path / "data"
    values = {}  # path -> grey value written
    for c, (name, extension) in enumerate(sorted(CLASS_FORMATS.items())):
        for i, stem in enumerate(IMAGE_NAMES):
            path = str(root / name / f"{stem}{extension}")
            values[path] = 20 + 40 * c + 5 * i
            _save_grey(path, values[path])
    (root / "README.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "s1" / ".DS_Store").write_bytes(b"\x00\x01junk")
    _save_grey(str(root / ".hidden" / "1.png"), 7)  # a hidden folder is no class
    return str(root), values


# --- scanning and loading ---------------------------------------------------------------

def test_scan_finds_exactly_the_class_folders_in_natural_order(class_tree):
    root, values = class_tree
    classes = scan_class_folders(root)
    assert [name for name, _ in classes] == EXPECTED_CLASSES
    for name, files in classes:
        assert [os.path.splitext(os.path.basename(f))[0] for f in files] == IMAGE_NAMES
        for f in files:
            assert f in values
            assert os.path.dirname(f) == os.path.join(root, *name.split("/"))
    assert sum(len(files) for _, files in classes) == len(values)


def test_scan_survives_digit_like_characters_in_folder_names(tmp_path):
    for name in ("s10", "s2", "size_5\u00b2", "\u2460"):
        _save_grey(str(tmp_path / name / "1.png"), 50)
    names = [name for name, _ in scan_class_folders(str(tmp_path))]
    assert sorted(names) == sorted(["s10", "s2", "size_5\u00b2", "\u2460"])
    assert names.index("s2") < names.index("s10")


def test_scan_follows_symlinked_class_folders_once(tmp_path):
    photos, tree = tmp_path / "photos", tmp_path / "tree"
    for name in ("alice", "bob"):
        _save_grey(str(photos / name / "1.png"), 50)
    tree.mkdir()
    os.symlink(photos / "alice", tree / "alice")  # a tree of links to photos elsewhere
    os.symlink(photos / "bob", tree / "bob")
    os.symlink(photos / "bob", tree / "robert")  # the same folder twice: read once
    os.symlink(tree, tree / "alice_again")  # a link back up: no endless walk
    names = [name for name, _ in scan_class_folders(str(tree))]
    assert names == ["alice", "bob"]


def test_load_folder_labels_match_the_folders_and_pixels_survive(class_tree):
    root, values = class_tree
    imageset = load_folder(root)
    assert imageset.class_names == EXPECTED_CLASSES
    assert imageset.images.dtype == np.uint8
    assert imageset.images.shape == (20, HEIGHT, WIDTH, 1)
    assert imageset.labels.shape == (20,)
    assert len(imageset.paths) == 20
    assert sorted(imageset.paths) == sorted(values)
    for image, label, path in zip(imageset.images, imageset.labels, imageset.paths):
        folder = os.path.relpath(os.path.dirname(path), root).replace(os.sep, "/")
        assert imageset.class_names[label] == folder
        expected = values[path]
        tolerance = 2 if path.endswith(".jpg") else 0  # JPEG is lossy
        assert np.abs(image.astype(int) - expected).max() <= tolerance, path
    assert np.bincount(imageset.labels).tolist() == [4] * 5


def test_groups_are_the_parent_folder_of_nested_classes(class_tree):
    imageset = load_folder(class_tree[0])
    groups = dict(zip(imageset.class_names, imageset.groups))
    assert groups == {"alpha/char1": "alpha", "s1": "", "s2": "", "s3": "", "s10": ""}


@pytest.mark.parametrize("image_size, downsample, shape", [
    (None, 1, (HEIGHT, WIDTH)),
    ((6, 5), 1, (6, 5)),
    ((20, 16), 1, (20, 16)),
    (None, 2, (6, 5)),
    (None, 3, (4, 4)),  # every 3rd of 12 rows and 10 columns
    ((9, 7), 2, (5, 4)),
])
def test_image_size_and_downsample_give_the_expected_shape(class_tree, image_size,
                                                           downsample, shape):
    imageset = load_folder(class_tree[0], image_size=image_size, downsample=downsample)
    assert imageset.images.shape == (20, *shape, 1)


def test_downsample_keeps_every_nth_pixel(tmp_path):
    pixels = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        Image.fromarray(pixels).save(tmp_path / name / "1.png")
    imageset = load_folder(str(tmp_path), downsample=2)
    np.testing.assert_array_equal(imageset.images[0, :, :, 0], pixels[::2, ::2])


def test_max_images_per_class_keeps_the_first_in_natural_order(class_tree):
    imageset = load_folder(class_tree[0], max_images_per_class=3)
    assert imageset.images.shape[0] == 15
    kept = {os.path.splitext(os.path.basename(p))[0] for p in imageset.paths}
    assert kept == {"1", "2", "3"}


def test_channels_three_gives_rgb(tmp_path):
    colour = (200, 30, 90)
    for name in ("red", "blue"):
        os.makedirs(tmp_path / name)
        Image.new("RGB", (WIDTH, HEIGHT), colour).save(tmp_path / name / "1.png")
    _save_grey(str(tmp_path / "grey" / "1.png"), 77)
    rgb = load_folder(str(tmp_path), channels=3)
    assert rgb.images.shape == (3, HEIGHT, WIDTH, 3)
    by_class = dict(zip([rgb.class_names[l] for l in rgb.labels], rgb.images))
    assert (by_class["red"].reshape(-1, 3) == colour).all()
    assert (by_class["grey"] == 77).all()  # grey becomes three equal channels
    grey = load_folder(str(tmp_path), channels=1)
    assert grey.images.shape == (3, HEIGHT, WIDTH, 1)
    luminance = np.asarray(Image.new("RGB", (1, 1), colour).convert("L"))[0, 0]
    assert (grey.images[grey.class_names.index("red")] == luminance).all()


def test_unreadable_image_is_skipped_with_a_warning_naming_it(class_tree):
    root, _ = class_tree
    broken = os.path.join(root, "s2", "broken.png")
    with open(broken, "wb") as handle:
        handle.write(b"this is not a png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imageset = load_folder(root)
    assert imageset.images.shape[0] == 20
    assert broken not in imageset.paths
    assert any(broken in str(w.message) for w in caught)


def test_missing_data_dir_raises_file_not_found_naming_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_folder(missing)


def test_empty_data_dir_setting_raises():
    with pytest.raises(ValueError, match="data_dir"):
        load_folder("")


def test_empty_folder_raises_naming_it(tmp_path):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty_dir"):
        load_folder(str(empty))


def test_images_but_no_class_folders_raises_naming_the_folder(tmp_path):
    flat = tmp_path / "flat_dir"
    for i in range(3):
        _save_grey(str(flat / f"{i}.png"), 100)
    (flat / "notes").mkdir()  # a sub-folder without images is no class either
    with pytest.raises(ValueError, match="flat_dir"), \
            pytest.warns(UserWarning, match="skipping 3 image.* directly in"):
        load_folder(str(flat))


def test_different_sizes_need_image_size(tmp_path):
    _save_grey(str(tmp_path / "a" / "1.png"), 10, size=(10, 12))
    _save_grey(str(tmp_path / "b" / "1.png"), 20, size=(14, 9))
    with pytest.raises(ValueError, match="image_size"):
        load_folder(str(tmp_path))
    imageset = load_folder(str(tmp_path), image_size=(8, 8))
    assert imageset.images.shape == (2, 8, 8, 1)


def test_load_digits():
    digits = prepare_data.load_digits()
    assert digits.images.shape == (1797, 8, 8, 1)
    assert digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.images.min() == 0
    assert len(digits.class_names) == 10
    assert sorted(np.unique(digits.labels).tolist()) == list(range(10))
    from sklearn.datasets import load_digits as sklearn_digits
    target = sklearn_digits().target
    assert [digits.class_names[l] for l in digits.labels] == [str(t) for t in target]
    # downsample applies here as for every dataset (predict.py applies it to new files)
    halved = prepare_data.load_digits(downsample=2)
    assert halved.images.shape == (1797, 4, 4, 1) and halved.source_size == (8, 8)
    np.testing.assert_array_equal(halved.images, digits.images[:, ::2, ::2])


# --- data_dir ---------------------------------------------------------------------------


def _folder_config(data_dir, **overrides):
    return get_config(dataset="folder", data_dir=str(data_dir), image_size=SMALL_SIZE,
                      channels=1, total_sample_size=50, **overrides)


def test_data_dir_that_is_a_file_says_so(tmp_path):
    a_file = tmp_path / "faces.zip"
    a_file.write_bytes(b"PK\x03\x04")
    with pytest.raises(NotADirectoryError, match="faces.zip.* is a file"):
        load_folder(str(a_file))


def test_unreadable_sub_folder_is_named_not_silently_dropped(tmp_path, monkeypatch):
    root = numbered_class_folders(tmp_path / "data", [2, 2, 2])
    locked = os.path.join(root, "c2")
    scandir = os.scandir

    def no_permission(path):  # what a folder without read permission does
        if os.path.abspath(path) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return scandir(path)
    monkeypatch.setattr(os, "scandir", no_permission)
    imageset, caught = load_with_warnings(root)
    assert imageset.class_names == ["c1", "c3"]
    assert caught == [f"skipping unreadable folder {locked}: Permission denied"]
    with pytest.raises(ValueError, match="unreadable folder .*c2: Permission denied"):
        load_folder(root, strict=True)


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
    root = numbered_class_folders(tmp_path / "data", [2, 2])
    save_image(tmp_path / "data" / "stray.png")
    (tmp_path / "data" / "README.txt").write_text("notes beside the classes: fine")
    imageset, texts = load_with_warnings(root)
    assert imageset.class_names == ["c1", "c2"]
    assert texts == [f"skipping 1 image(s) directly in {root} (e.g. stray.png): they "
                     f"belong to no class; a class is a folder of images, so move them "
                     f"into one"]


# --- classes with a single image --------------------------------------------------------

def test_single_image_class_is_skipped_with_a_warning_naming_it(tmp_path):
    root = numbered_class_folders(tmp_path / "data", [3, 1, 2])
    imageset, caught = load_with_warnings(root, min_images_per_class=2)
    assert imageset.class_names == ["c1", "c3"]
    assert np.bincount(imageset.labels).tolist() == [3, 2]
    lonely = os.path.join(root, "c2")
    assert caught == [f"skipping class folder {lonely}: it holds 1 readable image(s) and "
                      f"a class needs at least 2"]


def test_training_data_skips_single_image_classes(tmp_path):
    """load_dataset, what train.py calls, asks for 2 images per class."""
    root = numbered_class_folders(tmp_path / "data", [2, 1, 2, 2])
    with pytest.warns(UserWarning, match="class folder .*c2"):
        imageset = prepare_data.load_dataset(_folder_config(root))
    assert imageset.class_names == ["c1", "c3", "c4"]


def test_a_class_left_with_one_readable_image_is_skipped_too(tmp_path):
    root = numbered_class_folders(tmp_path / "data", [2, 2, 2])
    (tmp_path / "data" / "c3" / "2.png").write_bytes(b"")  # zero bytes: unreadable
    imageset, caught = load_with_warnings(root, min_images_per_class=2)
    assert imageset.class_names == ["c1", "c2"]
    assert any("c3" in text and "holds 1 readable" in text for text in caught)


def test_too_few_classes_left_for_the_split_is_an_error_naming_the_settings(tmp_path):
    root = numbered_class_folders(tmp_path / "data", [2, 1, 2, 1, 2, 2, 1])  # 4 usable classes of 7
    with pytest.warns(UserWarning):
        imageset = prepare_data.load_dataset(_folder_config(root))
    assert len(imageset.class_names) == 4
    with pytest.raises(ValueError) as error:
        build_splits(imageset, _folder_config(root))
    assert str(error.value) == (
        "4 classes are too few for test_fraction=0.2 and val_fraction=0.2: each part "
        "needs at least 2 classes. Lower --test_fraction and --val_fraction, use a "
        "dataset with at least 6 classes, or split pairs, not classes (--split=pairs "
        "--pairing=pairs --loss=contrastive --monitor=val_loss)")

    pairs = dict(split="pairs", pairing="pairs", loss="contrastive",  # as it says
                 monitor="val_loss")
    root = numbered_class_folders(tmp_path / "data2", [3, 1])
    with pytest.warns(UserWarning):
        imageset = prepare_data.load_dataset(_folder_config(root, **pairs))
    with pytest.raises(ValueError, match="1 class found: a Siamese network needs"):
        build_splits(imageset, _folder_config(root, **pairs))


def test_only_single_image_classes_is_an_error_naming_the_folder(tmp_path):
    root = numbered_class_folders(tmp_path / "lonely_data", [1, 1, 1])
    with pytest.warns(UserWarning), pytest.raises(ValueError) as error:
        prepare_data.load_dataset(_folder_config(root))
    assert str(error.value).startswith(f"no class folder in {root!r} holds 2 or more "
                                       f"readable images")


# --- corrupt and non-image files --------------------------------------------------------

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
    root = numbered_class_folders(tmp_path / "data", [3, 3])
    broken = tmp_path / "data" / "c1" / name
    broken.write_bytes(BROKEN_FILES[name])
    imageset, caught = load_with_warnings(root)
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
    root = numbered_class_folders(tmp_path / "data", [2, 2])
    bomb = save_image(tmp_path / "data" / "c2" / "bomb.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 12x10 is fine, 40x40 is not
    imageset, caught = load_with_warnings(root)
    assert bomb not in imageset.paths and len(imageset.paths) == 4
    assert [text for text in caught if bomb in text and "exceeds limit" in text]


def test_non_image_files_in_class_folders_are_named_hidden_and_system_files_not(
        tmp_path):
    root = numbered_class_folders(tmp_path / "data", [2, 2])
    data = tmp_path / "data"
    (data / "README.txt").write_text("dataset notes")  # beside the classes: fine
    (data / "c1" / "notes.txt").write_text("who is who")
    (data / "c2" / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "._1.png"):
        (data / "c1" / junk).write_bytes(b"\x00\x01junk")
    (data / "only_heic").mkdir()  # a whole person in a format not read: not silent
    (data / "only_heic" / "1.heic").write_bytes(b"\x00")

    imageset, caught = load_with_warnings(root)
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
    root = numbered_class_folders(tmp_path / "data", [2, 2])
    (tmp_path / "data" / "c1" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "data" / "c2" / "Thumbs.db").write_bytes(b"\x00")
    imageset, caught = load_with_warnings(root, strict=True)
    assert len(imageset.paths) == 4 and caught == []


def test_strict_refuses_a_single_image_class(tmp_path):
    root = numbered_class_folders(tmp_path / "data", [2, 1, 2])
    with pytest.raises(ValueError) as error:
        load_folder(root, min_images_per_class=2, strict=True)
    assert str(error.value).startswith(f"class folder {os.path.join(root, 'c2')}: it "
                                       f"holds 1 readable image(s)")


def test_strict_setting_reaches_load_folder_through_load_dataset(tmp_path):
    root = numbered_class_folders(tmp_path / "data", [2, 2])
    broken = tmp_path / "data" / "c1" / "broken.png"
    broken.write_bytes(b"")
    config = dict(_folder_config(root), strict=True)  # the key configs.py will get
    with pytest.raises(ValueError, match="broken.png"):
        prepare_data.load_dataset(config)


# --- sizes, modes and EXIF rotation -----------------------------------------------------

GRADIENT_16 = np.linspace(0, 4000, 12 * 10).reshape(SMALL_SIZE)
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
    for size, shape in ((None, SMALL_SIZE), ((6, 5), (6, 5)), ((30, 20), (30, 20))):
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
    picture = np.random.default_rng(0).integers(0, 256, SMALL_SIZE).astype(np.uint8)
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
    small = save_image(tmp_path / "a" / "1.png", size=first)
    save_image(tmp_path / "a" / "2.png", size=first)
    large = save_image(tmp_path / "b" / "1.png", size=other)
    save_image(tmp_path / "b" / "2.png", size=first)
    with pytest.raises(ValueError) as error:
        load_folder(str(tmp_path), downsample=downsample)
    expected = f"{small} is " + named.format(large) + ", width x height"
    assert expected in str(error.value)
    assert "--image_size=" in str(error.value)


def test_mixed_sizes_and_modes_become_one_array_at_image_size(tmp_path):
    save_image(tmp_path / "a" / "1.png", 50, size=(30, 20))
    save_image(tmp_path / "a" / "2.gif", 60, size=(7, 9), mode="P")
    save_image(tmp_path / "b" / "1.jpg", (10, 200, 30), size=(64, 48), mode="RGB")
    save_image(tmp_path / "b" / "2.png", (10, 200, 30, 0), size=(5, 5), mode="RGBA")
    save_image(tmp_path / "b" / "3.pbm", 1, mode="1")
    imageset = load_folder(str(tmp_path), image_size=(16, 16), channels=3)
    assert imageset.images.shape == (5, 16, 16, 3) and imageset.source_size == (16, 16)


# --- pairs -------------------------------------------------------------------------

# 7 classes of 1..7 images, shuffled so a class's images are not contiguous.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(7), np.arange(1, 8)))


def test_make_pairs_balanced_correctly_labelled_and_never_self():
    pairs, y = make_pairs(LABELS, np.arange(7), 61, 47, np.random.default_rng(3))
    assert pairs.shape == (108, 2) and pairs.dtype == np.int32
    assert y.shape == (108,) and y.dtype == np.float32
    assert int(np.sum(y == 1)) == 61 and int(np.sum(y == 0)) == 47
    same_class = LABELS[pairs[:, 0]] == LABELS[pairs[:, 1]]
    np.testing.assert_array_equal(y, same_class.astype(np.float32))
    assert (pairs[:, 0] != pairs[:, 1]).all()
    steps = np.diff(y)
    assert (steps > 0).any() and (steps < 0).any()  # shuffled, not two blocks


def test_make_pairs_uses_only_the_given_classes():
    ids = np.array([2, 4, 6])
    pairs, _ = make_pairs(LABELS, ids, 30, 30, np.random.default_rng(1))
    assert set(LABELS[pairs.ravel()].tolist()) <= set(ids.tolist())


def test_make_pairs_spreads_genuine_pairs_evenly_over_classes():
    pairs, y = make_pairs(LABELS, np.arange(7), 61, 10, np.random.default_rng(5))
    genuine_classes = LABELS[pairs[y == 1, 0]]
    counts = np.bincount(genuine_classes, minlength=7)
    assert counts[0] == 0  # class 0 has a single image: no genuine pair possible
    assert counts[1:].max() - counts[1:].min() <= 1
    assert counts.sum() == 61


def test_make_pairs_is_deterministic_for_a_seed():
    first = make_pairs(LABELS, np.arange(7), 40, 40, np.random.default_rng(11))
    again = make_pairs(LABELS, np.arange(7), 40, 40, np.random.default_rng(11))
    other = make_pairs(LABELS, np.arange(7), 40, 40, np.random.default_rng(12))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_make_pairs_errors():
    labels = np.array([0, 1, 2])  # one image per class
    with pytest.raises(ValueError, match="two images"):
        make_pairs(labels, np.arange(3), 5, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="two classes"):
        make_pairs(np.array([0, 0, 0]), np.array([0]), 2, 2, np.random.default_rng(0))


@pytest.mark.parametrize("n_classes, test_fraction, val_fraction", [
    (6, 0.25, 0.25), (10, 0.3, 0.3), (40, 0.25, 0.25), (40, 0.1, 0.1)])
def test_split_classes_disjoint_covering_at_least_two_each(n_classes, test_fraction,
                                                           val_fraction):
    train, val, test = split_classes(n_classes, test_fraction, val_fraction,
                                     np.random.default_rng(0))
    parts = [set(train.tolist()), set(val.tolist()), set(test.tolist())]
    assert min(len(p) for p in parts) >= 2
    assert sum(len(p) for p in parts) == n_classes
    assert set.union(*parts) == set(range(n_classes))
    assert len(test) == max(2, round(n_classes * test_fraction))


def test_test_fraction_zero_trains_on_all_but_validation_and_draws_no_test_pairs(
        digits):
    train, val, test = split_classes(30, 0.0, 0.17, np.random.default_rng(0))
    assert (len(train), len(val), len(test)) == (25, 5, 0)
    splits = build_splits(digits, _config(test_fraction=0.0))
    assert len(splits.class_split["test"]) == 0
    assert splits.test[0].shape == (0, 2) and splits.test[1].shape == (0,)
    assert len(splits.class_split["train"]) + len(splits.class_split["val"]) == 10
    assert len(splits.train[1]) == round(2 * 500 * 0.7)  # val takes 0.3 of everything


def test_split_classes_too_few_classes_raises():
    with pytest.raises(ValueError, match="5 classes"):
        split_classes(5, 0.25, 0.25, np.random.default_rng(0))


@pytest.fixture(scope="module")
def digits():
    return prepare_data.load_digits()


def _config(**overrides):
    return {"seed": 1337, "total_sample_size": 500, "test_fraction": 0.3,
            "val_fraction": 0.3, "split": "classes", **overrides}


def test_build_splits_by_classes_keeps_each_part_to_its_own_classes(digits):
    splits = build_splits(digits, _config())
    ids = splits.class_split
    sets = {name: set(ids[name].tolist()) for name in ("train", "val", "test")}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert set.union(*sets.values()) == set(range(10))
    for name in ("train", "val", "test"):
        pairs, y = getattr(splits, name)
        assert set(digits.labels[pairs.ravel()].tolist()) <= sets[name], name
        assert np.sum(y == 1) == np.sum(y == 0) > 0, name
        same_class = digits.labels[pairs[:, 0]] == digits.labels[pairs[:, 1]]
        np.testing.assert_array_equal(y, same_class.astype(np.float32))


@pytest.mark.parametrize("test_fraction, val_fraction", [(0.25, 0.25), (0.3, 0.2)])
def test_build_splits_by_pairs_follows_the_fractions(digits, test_fraction,
                                                     val_fraction):
    total = 500
    splits = build_splits(digits, _config(split="pairs", total_sample_size=total,
                                          test_fraction=test_fraction,
                                          val_fraction=val_fraction))
    n_test = round(2 * total * test_fraction)
    n_val = round((2 * total - n_test) * val_fraction)
    assert len(splits.test[1]) == n_test
    assert len(splits.val[1]) == n_val
    assert len(splits.train[1]) == 2 * total - n_test - n_val
    all_y = np.concatenate([splits.train[1], splits.val[1], splits.test[1]])
    assert np.sum(all_y == 1) == np.sum(all_y == 0) == total
    for name in ("train", "val", "test"):
        assert set(splits.class_split[name].tolist()) == set(range(10))


@pytest.mark.parametrize("split", ["classes", "pairs"])
def test_build_splits_is_deterministic_for_a_seed(digits, split):
    first = build_splits(digits, _config(split=split))
    again = build_splits(digits, _config(split=split))
    other = build_splits(digits, _config(split=split, seed=7))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name)[0], getattr(again, name)[0])
        np.testing.assert_array_equal(getattr(first, name)[1], getattr(again, name)[1])
        np.testing.assert_array_equal(first.class_split[name], again.class_split[name])
    assert not np.array_equal(first.test[0], other.test[0])


def test_pairs_also_in_matches_pairs_either_way_round():
    pairs = np.array([[0, 1], [2, 3], [5, 4], [7, 7], [9, 8]])
    others = np.array([[1, 0], [4, 5], [7, 7], [8, 6], [30, 2]])
    assert prepare_data.pairs_also_in(pairs, others).tolist() == [True, False, True,
                                                                  True, False]
    assert prepare_data.pairs_also_in(pairs, others[:0]).tolist() == [False] * 5


@pytest.mark.parametrize("split", ["classes", "pairs"])
def test_pairs_also_in_counts_the_test_pairs_training_saw(digits, split):
    few = prepare_data._from_arrays(digits.images[:60, :, :, 0], digits.labels[:60])
    splits = build_splits(few, _config(split=split))
    seen = prepare_data.pairs_also_in(splits.test[0], splits.train[0])
    training = {tuple(sorted(p)) for p in splits.train[0].tolist()}
    assert seen.tolist() == [tuple(sorted(p)) in training
                             for p in splits.test[0].tolist()]
    # Disjoint classes share no pair; 500 pairs of each label from one pool over 60
    # digits share many.
    assert seen.any() == (split == "pairs")


def test_merge_validation_moves_the_validation_classes_into_training(digits):
    splits = build_splits(digits, _config())
    merged = prepare_data.merge_validation(splits)
    ids = splits.class_split
    assert set(merged.class_split["train"].tolist()) == \
        set(ids["train"].tolist()) | set(ids["val"].tolist())
    assert len(merged.class_split["val"]) == 0 and len(merged.val[1]) == 0
    np.testing.assert_array_equal(merged.class_split["test"], ids["test"])
    np.testing.assert_array_equal(merged.test[0], splits.test[0])
    pairs, y = merged.train
    np.testing.assert_array_equal(pairs, np.concatenate([splits.train[0],
                                                         splits.val[0]]))
    same_class = digits.labels[pairs[:, 0]] == digits.labels[pairs[:, 1]]
    np.testing.assert_array_equal(y, same_class.astype(np.float32))
    assert not set(digits.labels[pairs.ravel()].tolist()) & set(ids["test"].tolist())


def test_build_splits_needs_two_classes(tmp_path):
    _save_grey(str(tmp_path / "only" / "1.png"), 1)
    _save_grey(str(tmp_path / "only" / "2.png"), 2)
    with pytest.raises(ValueError, match="at least 2"):
        build_splits(load_folder(str(tmp_path)), _config(split="pairs"))


# --- tf.data pipeline -------------------------------------------------------------------

def _image_index_images(n=9):
    """Image i is filled with the value 10 * i, so a batch's pixels reveal the indices."""
    return (np.arange(n, dtype=np.uint8)[:, None, None, None] * 10
            * np.ones((1, 3, 4, 1), np.uint8))


def test_pair_dataset_gathers_the_pairs_pixels_in_order():
    images = _image_index_images()
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(images), (7, 2)).astype(np.int32)
    labels = rng.integers(0, 2, 7).astype(np.float32)
    batches = list(pair_dataset(images, pairs, labels, batch_size=3, shuffle=False))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    a = np.concatenate([np.asarray(x[0]) for x, _ in batches])
    b = np.concatenate([np.asarray(x[1]) for x, _ in batches])
    y = np.concatenate([np.asarray(y) for _, y in batches])
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, images[pairs[:, 0]].astype(np.float32))
    np.testing.assert_array_equal(b, images[pairs[:, 1]].astype(np.float32))
    np.testing.assert_array_equal(y, labels)


def test_pair_dataset_shuffle_keeps_pixels_and_labels_together():
    images = _image_index_images()
    pairs = np.array([[i, (i * 2 + 1) % 9] for i in range(9)], np.int32)
    labels = (np.arange(9) % 2).astype(np.float32)
    expected = [(int(p), int(q), float(l)) for (p, q), l in zip(pairs, labels)]
    epochs = []
    batches = pair_dataset(images, pairs, labels, batch_size=4, shuffle=True, seed=1)
    batch_sizes = []
    for (a, b), y in batches.take(6):  # endless: two epochs of 4 + 4 + 1 pairs
        batch_sizes.append(len(y))
        if len(batch_sizes) in (1, 4):
            epochs.append([])
        for image_a, image_b, label in zip(np.asarray(a), np.asarray(b), np.asarray(y)):
            epochs[-1].append((int(image_a[0, 0, 0]) // 10, int(image_b[0, 0, 0]) // 10,
                               float(label)))
    assert batch_sizes == [4, 4, 1, 4, 4, 1]  # batches never straddle two epochs
    for seen in epochs:
        assert sorted(seen) == sorted(expected)
        assert seen != expected  # actually shuffled
    assert epochs[0] != epochs[1]  # a new order each epoch
    again = pair_dataset(images, pairs, labels, batch_size=4, shuffle=True, seed=1)
    first_again = np.concatenate([np.asarray(y) for _, y in again.take(3)])
    np.testing.assert_array_equal(first_again, [label for *_, label in epochs[0]])


def test_image_dataset_yields_the_batches_pixels_with_their_class_labels():
    images = _image_index_images()
    labels = np.arange(len(images)) % 3
    index_batches = np.array([[0, 3, 1, 4], [2, 5, 8, 6]], np.int32)
    batches = list(prepare_data.image_dataset(images, labels, index_batches))
    assert len(batches) == 2
    for (x, y), indices in zip(batches, index_batches):
        np.testing.assert_array_equal(np.asarray(x), images[indices].astype(np.float32))
        np.testing.assert_array_equal(np.asarray(y), labels[indices])


def test_image_dataset_turns_virtual_images_and_labels_them_as_new_classes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 5, 5, 1), dtype=np.uint8)
    labels = np.array([0, 1, 1], np.int32)
    virtual_labels, _, _ = samplers.rotated_classes(labels, [0, 1], ["", ""])
    index_batches = np.array([[0, 3, 7, 11], [2, 5, 10, 6]], np.int32)
    for (x, y), indices in zip(prepare_data.image_dataset(
            images, virtual_labels, index_batches, rotations=True), index_batches):
        expected = [np.rot90(images[i % 3], i // 3) for i in indices]  # anticlockwise
        np.testing.assert_array_equal(np.asarray(x), np.stack(expected).astype(np.float32))
        np.testing.assert_array_equal(np.asarray(y), labels[indices % 3] + 2 * (indices // 3))
