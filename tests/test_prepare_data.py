"""prepare_data: class folders -> one uint8 image array -> balanced labelled pairs."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import prepare_data
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


@pytest.mark.parametrize("test_fraction, pairs", [(0.3, 300), (0.0, 250)])
def test_another_folder_is_all_test_pairs_even_for_a_run_without_a_test_part(
        digits, test_fraction, pairs):
    splits = prepare_data.unseen_splits(digits, _config(test_fraction=test_fraction))
    assert len(splits.test[1]) == pairs and splits.test[1].sum() == pairs / 2
    assert len(splits.train[1]) == len(splits.val[1]) == 0
    assert len(splits.class_split["test"]) == 10


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


# --- the P x K sampler for in-batch losses ----------------------------------------------

def test_pk_batches_hold_p_distinct_classes_of_k_distinct_images():
    labels = np.repeat(np.arange(8), 5)  # 8 classes x 5 images
    class_ids = np.array([0, 2, 3, 5, 6, 7])
    batches = prepare_data.pk_batches(labels, class_ids, 4, 3, 20,
                                      np.random.default_rng(0))
    assert batches.shape == (20, 12) and batches.dtype == np.int32
    for batch in batches:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and set(classes) <= set(class_ids)
        assert np.all(counts == 3)
        assert len(np.unique(batch)) == 12  # no image twice: 5 images >= K
    again = prepare_data.pk_batches(labels, class_ids, 4, 3, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(batches, again)


def test_pk_batches_repeat_images_only_for_classes_smaller_than_k():
    labels = np.array([0, 0, 1, 1, 1, 1, 2])  # class 2 has one image: not usable
    batches = prepare_data.pk_batches(labels, [0, 1, 2], 5, 4, 10,
                                      np.random.default_rng(1))
    assert batches.shape == (10, 8)  # P capped at the 2 usable classes
    for batch in batches:
        assert set(labels[batch]) == {0, 1}
        assert len(np.unique(batch[labels[batch] == 1])) == 4


def test_pk_batches_draw_their_classes_from_batch_groups_parent_folders():
    # 12 classes x 3 images in 3 alphabets: a (classes 0-5), b (6-9), c (10-11)
    labels = np.repeat(np.arange(12), 3)
    groups = ["a"] * 6 + ["b"] * 4 + ["c"] * 2
    batches = prepare_data.pk_batches(labels, np.arange(12), 4, 2, 200,
                                      np.random.default_rng(0), groups, batch_groups=1)
    seen = set()
    for batch in batches:
        classes = np.unique(labels[batch])
        assert len(classes) == 4
        in_batch = [groups[c] for c in classes]
        # one alphabet's classes; only alphabet c (2 classes) needs filling up
        if len(set(in_batch)) == 1:
            seen.add(in_batch[0])
        else:
            assert in_batch.count("c") == 2
            seen.add("c")
    assert seen == {"a", "b", "c"}
    again = prepare_data.pk_batches(labels, np.arange(12), 4, 2, 200,
                                    np.random.default_rng(0), groups, batch_groups=1)
    np.testing.assert_array_equal(batches, again)


def test_pk_batches_ignore_batch_groups_without_groups_and_by_default():
    labels = np.repeat(np.arange(6), 3)
    plain = prepare_data.pk_batches(labels, np.arange(6), 3, 2, 5, np.random.default_rng(4))
    for groups, batch_groups in ((None, 2), (["x"] * 3 + ["y"] * 3, 0)):
        np.testing.assert_array_equal(
            plain, prepare_data.pk_batches(labels, np.arange(6), 3, 2, 5,
                                           np.random.default_rng(4), groups, batch_groups))


def test_pk_batches_need_two_usable_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        prepare_data.pk_batches(np.array([0, 0, 1]), [0, 1], 2, 2, 1,
                                np.random.default_rng(0))


def test_image_dataset_yields_the_batches_pixels_with_their_class_labels():
    images = _image_index_images()
    labels = np.arange(len(images)) % 3
    index_batches = np.array([[0, 3, 1, 4], [2, 5, 8, 6]], np.int32)
    batches = list(prepare_data.image_dataset(images, labels, index_batches))
    assert len(batches) == 2
    for (x, y), indices in zip(batches, index_batches):
        np.testing.assert_array_equal(np.asarray(x), images[indices].astype(np.float32))
        np.testing.assert_array_equal(np.asarray(y), labels[indices])


def test_rotated_classes_add_three_turned_copies_of_each_training_class():
    labels = np.array([0, 0, 1, 1, 2, 2], np.int32)  # 3 classes, 6 images
    groups = ["a", "a", "b"]
    virtual_labels, class_ids, virtual_groups = prepare_data.rotated_classes(
        labels, [0, 2], groups)
    assert len(virtual_labels) == 4 * len(labels)
    # image i turned k times is index i + 6k, a class of its own: label + 3k
    for k in range(4):
        np.testing.assert_array_equal(virtual_labels[6 * k:6 * (k + 1)], labels + 3 * k)
    np.testing.assert_array_equal(class_ids, [0, 2, 3, 5, 6, 8, 9, 11])
    assert [virtual_groups[c] for c in class_ids] == ["a", "b"] * 4
    batches = prepare_data.pk_batches(virtual_labels, class_ids, 4, 2, 50,
                                      np.random.default_rng(0), virtual_groups)
    assert set(virtual_labels[batches.ravel()]) == set(class_ids)  # class 1 never
    assert all(len(set(virtual_labels[b])) == 4 for b in batches)


def test_image_dataset_turns_virtual_images_and_labels_them_as_new_classes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 5, 5, 1), dtype=np.uint8)
    labels = np.array([0, 1, 1], np.int32)
    virtual_labels, _, _ = prepare_data.rotated_classes(labels, [0, 1], ["", ""])
    index_batches = np.array([[0, 3, 7, 11], [2, 5, 10, 6]], np.int32)
    for (x, y), indices in zip(prepare_data.image_dataset(
            images, virtual_labels, index_batches, rotations=True), index_batches):
        expected = [np.rot90(images[i % 3], i // 3) for i in indices]  # anticlockwise
        np.testing.assert_array_equal(np.asarray(x), np.stack(expected).astype(np.float32))
        np.testing.assert_array_equal(np.asarray(y), labels[indices % 3] + 2 * (indices // 3))


# --- Koch's affine distortions ----------------------------------------------------------

def test_augmenter_applies_each_distortion_with_probability_half_within_range():
    # A bright 4x4 square in the centre of a 32x32 image: rotation, shear and scale
    # about the centre keep its centroid near the centre, translation moves it by at
    # most 2 pixels. An image escapes all four distortions with probability 1/16.
    image = np.zeros((32, 32, 1), np.float32)
    image[14:18, 14:18] = 255.0
    batch = np.repeat(image[None], 400, axis=0)
    augment = prepare_data.make_augmenter((32, 32, 1), flip=False, seed=3)
    out = np.asarray(augment(batch))
    assert out.shape == batch.shape
    unchanged = np.all(np.isclose(out, batch, atol=1e-3), axis=(1, 2, 3))
    assert 8 <= unchanged.sum() <= 45, unchanged.sum()  # expected 25 of 400
    rows, cols = np.mgrid[:32, :32]
    mass = out[..., 0].sum(axis=(1, 2))
    centre_r = (out[..., 0] * rows).sum(axis=(1, 2)) / mass
    centre_c = (out[..., 0] * cols).sum(axis=(1, 2)) / mass
    shift = np.hypot(centre_r - 15.5, centre_c - 15.5)
    assert shift.max() <= 2 * np.sqrt(2) + 0.75
    assert np.mean(shift > 0.5) > 0.2  # translation is applied to many images
    again = np.asarray(prepare_data.make_augmenter((32, 32, 1), seed=3)(batch))
    np.testing.assert_allclose(again, out)  # seeded


def test_scale_step_scales_height_and_width_each_by_0_8_to_1_2():
    # Two dots 16 px apart across and two 16 px apart down, about the centre of a
    # 41x41 image: after the scale step alone their spacing / 16 is the content's
    # scale along each axis, Koch's 0.8-1.2 drawn for each axis on its own.
    image = np.zeros((41, 41, 1), np.float32)
    for row, col in ((20, 12), (20, 28), (12, 20), (28, 20)):
        image[row, col] = 255.0
    batch = np.repeat(image[None], 2000, axis=0)
    out = np.asarray(prepare_data.make_augmenter((41, 41, 1), seed=0,
                                                 only=("scale",))(batch))[..., 0]
    scaled = ~np.all(np.isclose(out, batch[..., 0], atol=1e-3), axis=(1, 2))
    assert 900 <= scaled.sum() <= 1100  # probability 0.5
    axis = np.arange(41)

    def spacing(profiles):  # centroid of the far half minus that of the near half
        near, far = profiles[:, :20], profiles[:, 21:]
        return ((far * axis[21:]).sum(1) / far.sum(1)
                - (near * axis[:20]).sum(1) / near.sum(1)) / 16

    across = spacing(out[scaled][:, 19:22, :].sum(axis=1))
    down = spacing(out[scaled][:, :, 19:22].sum(axis=2))
    for scale in (across, down):
        assert 0.78 <= scale.min() < 0.85 and 1.15 < scale.max() <= 1.22
        assert abs(np.median(scale) - 1.0) < 0.06
    assert abs(np.corrcoef(across, down)[0, 1]) < 0.2  # each axis its own


def test_random_erasing_covers_one_rectangle_of_2_to_33_percent_in_half_the_images():
    # A uniform grey image: the affine distortions (nearest fill) leave it as it is, so
    # every changed pixel comes from erasing.
    batch = np.full((400, 40, 30, 1), 128.0, np.float32)
    plain = np.asarray(prepare_data.make_augmenter((40, 30, 1), seed=5)(batch))
    np.testing.assert_allclose(plain, batch, atol=1e-3)
    out = np.asarray(prepare_data.make_augmenter((40, 30, 1), erase=True, seed=5)(batch))
    changed = ~np.isclose(out, batch, atol=1e-3)[..., 0]
    erased = changed.any(axis=(1, 2))
    assert 160 <= erased.sum() <= 240, erased.sum()  # expected 200 of 400
    for mask in changed[erased]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert 0.01 <= box / mask.size <= 0.34
        assert mask.sum() >= 0.9 * box  # one filled rectangle (noise may hit 128)
