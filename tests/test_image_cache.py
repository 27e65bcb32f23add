"""image_cache.py: a folder decoded once into the cache, read back unchanged, rebuilt
when a file or a preprocessing setting changes, a damaged cache detected, and the
cached images read by index and by tf.data as an array in memory would be."""
import os
import time

import numpy as np
import pytest

import image_cache
import prepare_data
from conftest import load_with_warnings, save_image, write_class_folders


@pytest.fixture
def decoded(monkeypatch):
    """The files prepare_data decodes, in a list, as they are decoded."""
    files = []
    original = prepare_data.load_image

    def counting(path, *args, **kwargs):
        files.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(prepare_data, "load_image", counting)
    return files


@pytest.fixture
def folder(tmp_path):
    return write_class_folders(tmp_path / "data", 4, per_class=3)


def load(folder, cache_dir, **settings):
    return prepare_data.load_folder(str(folder), cache_dir=str(cache_dir), **settings)


def same_imageset(a, b):
    assert np.array_equal(a.images[:], b.images[:])
    assert np.array_equal(a.labels, b.labels)
    assert (a.class_names, a.groups, a.paths, a.source_size) == \
        (b.class_names, b.groups, b.paths, b.source_size)


def test_a_second_load_reads_the_cache_and_gives_what_decoding_gives(folder, tmp_path,
                                                                     decoded):
    in_memory = prepare_data.load_folder(str(folder))
    assert len(decoded) == 12
    first = load(folder, tmp_path / "cache")
    assert len(decoded) == 24
    second = load(folder, tmp_path / "cache")
    assert len(decoded) == 24  # nothing decoded again
    same_imageset(second, in_memory)
    same_imageset(first, in_memory)


def touch_later(path):
    """Give `path` a modification time surely different from the one it had."""
    later = os.stat(path).st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("change", ["rewritten", "replaced", "removed", "added"])
def test_the_cache_is_rebuilt_when_a_file_changes(folder, tmp_path, decoded, change):
    load(folder, tmp_path / "cache")
    target = folder / "person2" / "1.png"
    if change == "rewritten":  # same size and name, other pixels
        save_image(target, value=7, size=(24, 24))
        touch_later(target)
    elif change == "replaced":  # another file moved onto it, its times carried over
        other = save_image(tmp_path / "elsewhere.png", value=250, size=(24, 24))
        os.utime(other, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns))
        time.sleep(0.01)
        os.replace(other, target)
    elif change == "removed":
        os.remove(target)
    else:
        save_image(folder / "person2" / "4.png", value=3, size=(24, 24))
    decoded.clear()
    cached = load(folder, tmp_path / "cache")
    assert decoded  # decoded again
    same_imageset(cached, prepare_data.load_folder(str(folder)))
    assert len(os.listdir(tmp_path / "cache")) == 1  # the folder's one slot, rebuilt


@pytest.mark.parametrize("setting", [dict(image_size=(12, 12)), dict(downsample=2),
                                     dict(channels=3), dict(max_images_per_class=2)])
def test_a_preprocessing_setting_gets_a_cache_of_its_own(folder, tmp_path, decoded,
                                                         setting):
    load(folder, tmp_path / "cache")
    decoded.clear()
    cached = load(folder, tmp_path / "cache", **setting)
    assert decoded
    same_imageset(cached, prepare_data.load_folder(str(folder), **setting))
    decoded.clear()
    load(folder, tmp_path / "cache")  # the first setting's cache is still there
    assert not decoded


def only_slot(cache_dir):
    [slot] = os.listdir(cache_dir)
    return os.path.join(cache_dir, slot)


@pytest.mark.parametrize("damage", ["truncated", "removed", "index"])
def test_a_damaged_cache_is_detected_and_rebuilt(folder, tmp_path, decoded, damage):
    load(folder, tmp_path / "cache")
    slot = only_slot(tmp_path / "cache")
    [images] = [name for name in os.listdir(slot) if name.startswith("images-")]
    image_file = image_cache.row_path(os.path.join(slot, images), 5)
    if damage == "truncated":
        os.truncate(image_file, 100)
    elif damage == "removed":
        os.remove(image_file)
    else:
        with open(os.path.join(slot, "index.json"), "w") as handle:
            handle.write('{"key": ')
    decoded.clear()
    cached, warned = load_with_warnings(str(folder), cache_dir=str(tmp_path / "cache"))
    assert any("image cache" in w and "damaged" in w for w in warned), warned
    assert len(decoded) == 12
    same_imageset(cached, prepare_data.load_folder(str(folder)))


def test_a_build_that_stops_leaves_no_cache_and_the_next_load_builds_one(
        folder, tmp_path, monkeypatch):
    original = prepare_data.load_image

    def fails_on_the_fifth(path, *args, **kwargs):
        if path.endswith(os.path.join("person2", "2.png")):
            raise KeyboardInterrupt
        return original(path, *args, **kwargs)

    monkeypatch.setattr(prepare_data, "load_image", fails_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        load(folder, tmp_path / "cache")
    assert os.listdir(only_slot(tmp_path / "cache")) == ["lock"]  # nothing half-made
    monkeypatch.setattr(prepare_data, "load_image", original)
    same_imageset(load(folder, tmp_path / "cache"), prepare_data.load_folder(str(folder)))


def test_skipped_files_are_warned_about_again_from_the_cache_and_strict_stops(
        tmp_path):
    folder = write_class_folders(tmp_path / "data", 3, per_class=3)
    (folder / "person1" / "9.png").write_bytes(b"not an image")
    (folder / "person3" / "2.png").write_bytes(b"nor this")
    (folder / "person3" / "3.png").write_bytes(b"nor this")
    first, warned_first = load_with_warnings(str(folder), min_images_per_class=2,
                                             cache_dir=str(tmp_path / "cache"))
    second, warned_second = load_with_warnings(str(folder), min_images_per_class=2,
                                               cache_dir=str(tmp_path / "cache"))
    assert warned_first == warned_second and len(warned_first) == 4  # 3 files, 1 class
    assert first.class_names == second.class_names == ["person1", "person2"]
    in_memory, warned = load_with_warnings(str(folder), min_images_per_class=2)
    assert warned == warned_first
    same_imageset(second, in_memory)
    with pytest.raises(ValueError, match="9.png"):
        load(folder, tmp_path / "cache", min_images_per_class=2, strict=True)


def test_an_unwritable_cache_dir_is_one_line_naming_the_fixes(folder, tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(OSError, match="--cache_dir=PATH.*--image_cache=False"):
        load(folder, blocked / "cache")


@pytest.fixture
def on_disk(folder, tmp_path):
    """(DiskImages, the same images as an array)."""
    cached = load(folder, tmp_path / "cache")
    assert isinstance(cached.images, image_cache.DiskImages)
    return cached.images, prepare_data.load_folder(str(folder)).images


@pytest.mark.parametrize("index", [3, -1, np.int64(2), slice(2, 9, 3), slice(None),
                                   [5, 1, 5], np.array([[0, 11], [4, 4]]),
                                   np.arange(12) % 3 == 0, (slice(1, 3), 0, 5)])
def test_disk_images_index_like_an_array(on_disk, index):
    disk, array = on_disk
    assert np.array_equal(disk[index], array[index])
    assert disk.shape == array.shape and len(disk) == len(array)


def test_disk_images_out_of_range_is_an_index_error(on_disk):
    disk, _ = on_disk
    with pytest.raises(IndexError, match="12"):
        disk[[0, 12]]


def test_tf_data_reads_the_cache_as_it_reads_an_array(on_disk):
    disk, array = on_disk
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(array), (40, 2)).astype(np.int32)
    labels = rng.integers(0, 2, 40).astype(np.float32)
    from_disk, from_memory = (
        list(prepare_data.pair_dataset(images, pairs, labels, 16, shuffle=True, seed=3)
             .take(4).as_numpy_iterator()) for images in (disk, array))
    for ((a, b), y), ((a2, b2), y2) in zip(from_disk, from_memory):
        assert np.array_equal(a, a2) and np.array_equal(b, b2) and np.array_equal(y, y2)
    batches = np.arange(12).reshape(3, 4)
    for (x, c), (x2, c2) in zip(
            prepare_data.image_dataset(disk, np.arange(12) // 3, batches,
                                       rotations=True).as_numpy_iterator(),
            prepare_data.image_dataset(array, np.arange(12) // 3, batches,
                                       rotations=True).as_numpy_iterator()):
        assert np.array_equal(x, x2) and np.array_equal(c, c2)
