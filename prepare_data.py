"""Images in, balanced labelled pairs out.

Every image is decoded once into one uint8 array (N, H, W, C), in memory or in the
image cache on disk (image_cache.py); a pair is two row indices into it, with label
1 = genuine (same class) and 0 = impostor (different classes). Training gathers the
pixels of a batch's pairs on the fly (`pair_dataset`), so memory does not grow with
the number of pairs.
"""
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

import backbones
import image_cache
import memory_budget

IMAGE_EXTENSIONS = (".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp", ".ppm", ".pbm")
SYSTEM_FILES = ("thumbs.db", "desktop.ini")  # ignored silently, like hidden files
# What reading a broken image file raises (a forged header can claim a huge size).
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)
GENUINE, IMPOSTOR = 1, 0


@dataclass
class ImageSet:
    """All images of a dataset, each stored once."""
    images: np.ndarray  # uint8 (N, H, W, C), or image_cache.DiskImages read on demand
    labels: np.ndarray  # int32 (N,): index into class_names
    class_names: list  # e.g. ["s1", "s2", ...] or ["Greek/character01", ...]
    groups: list  # per class: its parent folder (the Omniglot alphabet), "" at the top
    paths: list  # per image: its file, or "" for bundled datasets
    source_size: tuple  # (height, width) before `downsample`: new images are resized to it
    origin: str = ""  # how the images were read, e.g. "decoded 400 files in 0.1 s"


def _natural_key(text):
    """Sort s2 before s10."""
    return [int(part) if part.isdecimal() else part.lower()
            for part in re.split(r"(\d+)", text)]


def is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _skip(problem, strict):
    """Warn that `problem` (naming a file or folder) is skipped; with strict, raise."""
    if strict:
        raise ValueError(f"{problem}: fix or remove it (strict=True stops at the first "
                         f"bad file instead of skipping it)")
    warnings.warn(f"skipping {problem}")


def scan_class_folders(data_dir, strict=False):
    """Find the classes under `data_dir`: every folder that directly holds images.

    Folders may nest (Omniglot: alphabet/character/*.png); a class is named by its
    path relative to `data_dir`. Returns [(class_name, [image paths])], naturally sorted.
    Other files in sub-folders are skipped with a warning naming them (hidden and
    system files silently), or with `strict` raise ValueError.
    """
    if not data_dir:
        raise ValueError("data_dir is empty: set it to a folder of class folders, e.g. "
                         "--data_dir=data/att_faces (holding s1/, s2/, ...)")
    if os.path.isfile(data_dir):
        raise NotADirectoryError(
            f"data_dir {data_dir!r} is a file: pass --data_dir=PATH to a folder that "
            f"holds one sub-folder per class")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data_dir {data_dir!r} does not exist: download the dataset there or pass "
            f"--data_dir=PATH to a folder that holds one sub-folder per class")
    def unreadable_folder(error):  # os.walk would skip it without a word
        _skip(f"unreadable folder {error.filename}: {error.strerror}", strict)

    classes = []
    # Symlinked class folders are followed (a tree of links to photos kept elsewhere);
    # a folder reached twice, as by a link to a parent, is read once.
    visited = {os.path.realpath(data_dir)}
    for root, dirs, files in os.walk(data_dir, onerror=unreadable_folder,
                                     followlinks=True):
        kept = []
        for d in sorted((d for d in dirs if not d.startswith(".")), key=_natural_key):
            target = os.path.realpath(os.path.join(root, d))
            if target not in visited:
                visited.add(target)
                kept.append(d)
        dirs[:] = kept
        images = sorted((f for f in files if is_image_file(f)), key=_natural_key)
        at_top = os.path.abspath(root) == os.path.abspath(data_dir)
        for name in sorted(files, key=_natural_key):
            if not (at_top or is_image_file(name) or name.startswith(".")
                    or name.lower() in SYSTEM_FILES):
                _skip(f"{os.path.join(root, name)}: not an image file (the extensions "
                      f"read are {' '.join(IMAGE_EXTENSIONS)})", strict)
        if images and at_top:
            warnings.warn(f"skipping {len(images)} image(s) directly in {data_dir} "
                          f"(e.g. {images[0]}): they belong to no class; a class is a "
                          f"folder of images, so move them into one")
        elif images:
            name = os.path.relpath(root, data_dir).replace(os.sep, "/")
            classes.append((name, [os.path.join(root, f) for f in images]))
    if not classes:
        raise ValueError(
            f"no class folders found in {data_dir!r}: expected one sub-folder per class "
            f"holding its images (e.g. {data_dir}/s1/1.pgm, {data_dir}/s2/1.pgm)")
    classes.sort(key=lambda c: _natural_key(c[0]))
    return classes


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16-bit, 32-bit and float pixels


def _wide_to_8bit(image):
    """A 16-bit, 32-bit or float image as 8-bit grey, scaled by its format's range.

    Pillow's convert("L") clips such values (a float image in [0, 1] turns black).
    The scale comes from the format, never from the image's own brightest pixel, so
    the same picture saved at 8 and at 16 bits gives the same pixels and a dark photo
    stays dark: 16-bit files (PNG, TIFF, and PGM, which Pillow stretches to 0-65535)
    are divided by 257; floats are taken as 0-1 (or 0-255 or 0-65535 when they
    exceed 1 or 255); 32-bit integers above 65535 as the full signed range.
    """
    wide = np.nan_to_num(np.asarray(image, dtype=np.float64))
    top = wide.max(initial=0.0)
    if image.mode == "F":
        full_scale = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    else:
        full_scale = 65535.0 if top <= 65535 else 2.0 ** 31 - 1
    scaled = np.clip(np.round(wide * (255.0 / full_scale)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8))


def load_image(path, image_size=None, downsample=1, channels=1):
    """Read one image file as uint8 (H, W, C), preprocessed exactly as in training.

    EXIF rotation is applied, any mode (palette, RGBA, 16-bit, 1-bit) becomes grey or
    RGB, then the image is resized to `image_size` (height, width) if given and every
    `downsample`-th pixel is kept.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in WIDE_MODES:
            image = _wide_to_8bit(image)
        image = image.convert("L" if channels == 1 else "RGB")
        if image_size is not None:
            height, width = image_size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array[::downsample, ::downsample]


def _file_size(path):
    """(width, height) of an image file, upright as EXIF says."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).size


def _decode_files(paths, sink, image_size, downsample, channels):
    """Decode paths[i] into sink[i] on every core (threads: Pillow decodes and resizes
    with the GIL released). Returns, per file, None when stored, else why not: the
    error of an unreadable file, or its (H, W, C) when that differs from the sink's."""
    shape = tuple(sink.shape[1:])

    def decode(rows):
        outcome = []
        for i in rows:
            try:
                array = load_image(paths[i], image_size, downsample, channels)
            except UNREADABLE as error:
                outcome.append(str(error))
                continue
            if array.shape == shape:
                sink[i] = array
            outcome.append(None if array.shape == shape else array.shape)
        return outcome

    chunks = [range(i, min(i + 64, len(paths))) for i in range(0, len(paths), 64)]
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [result for chunk in pool.map(decode, chunks) for result in chunk]


def _first_shape(paths, image_size, downsample, channels):
    """The (H, W, C) every image takes: image_size's, else the first readable file's."""
    if image_size is not None:
        height, width = image_size
    else:
        for path in paths:
            try:
                width, height = _file_size(path)
                break
            except UNREADABLE:
                continue
        else:
            return None
    return (-(-height // downsample), -(-width // downsample), channels)


def _kept_files(classes, outcomes, data_dir, needed, strict):
    """(rows kept, problems): the readable files of every class that keeps at least
    `needed` of them, in order; each file or class left out is a problem, warned
    about, or with `strict` raised."""
    kept, problems, row = [], [], 0
    for name, files in classes:
        readable = []
        for path in files:
            if outcomes[row] is None:
                readable.append(row)
            elif isinstance(outcomes[row], str):
                problems.append(f"unreadable image {path}: {outcomes[row]}")
                _skip(problems[-1], strict)
            row += 1
        if len(readable) < needed:
            problems.append(f"class folder {os.path.join(data_dir, name)}: it holds "
                            f"{len(readable)} readable image(s) and a class needs at "
                            f"least {needed}")
            _skip(problems[-1], strict)
            continue
        kept.extend(readable)
    return kept, problems


def _check_one_size(data_dir, paths, outcomes, shape):
    """Raise, naming files of each size, when images of another size than the first
    were met (they are not stored)."""
    others = {}  # (H, W, C) -> the first file of that size
    for path, outcome in zip(paths, outcomes):
        if isinstance(outcome, tuple):
            others.setdefault(outcome, path)
    if others:
        first = next(p for p, o in zip(paths, outcomes) if o is None)
        examples = [first] + list(others.values())[:2]
        example = ", ".join(f"{path} is {'x'.join(map(str, _file_size(path)))}"
                            for path in examples)
        raise ValueError(
            f"images in {data_dir!r} have different sizes ({example}, width x height): "
            f"set image_size, e.g. --image_size=105,105, so that every image is "
            f"resized to one size")


def load_folder(data_dir, image_size=None, downsample=1, channels=1,
                max_images_per_class=0, min_images_per_class=1, strict=False,
                cache_dir="", training_step=None):
    """Load a class-folder tree into an ImageSet.

    Unreadable or non-image files, and class folders left with fewer than
    `min_images_per_class` readable images, are skipped with a warning naming them;
    with `strict`, the first of them raises ValueError instead.

    Images are decoded on every core. With `cache_dir`, into the image cache there
    (image_cache), read back by later loads of the unchanged folder; its images stay
    on disk, each batch read from its files.
    Without, into memory, and a folder whose images cannot fit is refused before
    decoding (memory_budget.NotEnoughMemory); so are images too large for a training
    step, `training_step` = (images per step, architecture), of that network.
    """
    started = time.time()
    classes = scan_class_folders(data_dir, strict)
    if max_images_per_class:
        classes = [(name, files[:max_images_per_class]) for name, files in classes]
    paths = [path for _, files in classes for path in files]
    needed = max(1, min_images_per_class)
    shape = _first_shape(paths, image_size, downsample, channels)
    if shape is None:
        raise _none_readable(data_dir, needed)
    image_bytes = int(np.prod(shape))
    size = "x".join(map(str, shape))
    size_fix = "use a smaller --image_size or a larger --downsample"
    if training_step:
        per_step, architecture = training_step
        memory_budget.check_fits(
            backbones.training_bytes(architecture, shape, per_step),
            f"training steps of {per_step} images of {size} through {architecture}",
            f"{size_fix}, or a smaller --batch_size")

    def decode(sink):
        outcomes = _decode_files(paths, sink, image_size, downsample, channels)
        if image_size is None:
            _check_one_size(data_dir, paths, outcomes, shape)
        return _kept_files(classes, outcomes, data_dir, needed, strict)

    if cache_dir:
        images, kept, origin = _load_cached(
            cache_dir, data_dir, [image_size, downsample, channels, max_images_per_class,
                                  needed], paths, shape, decode, strict)
    else:
        memory_budget.check_fits(
            len(paths) * image_bytes, f"the {len(paths):,} images of {size} in {data_dir}",
            f"{size_fix}, or --image_cache=True to read them from a cache on disk")
        images = np.empty((len(paths), *shape), np.uint8)
        kept, _ = decode(images)
        for new, old in enumerate(kept):  # in place: no second copy of the images
            images[new] = images[old]
        images = images[:len(kept)]
        origin = "decoded (image_cache=False)"
    if not len(kept):
        raise _none_readable(data_dir, needed)
    label_of = [label for label, (_, files) in enumerate(classes) for _ in files]
    used = sorted({label_of[row] for row in kept})
    class_names = [classes[label][0] for label in used]
    new_label = {label: i for i, label in enumerate(used)}
    kept_paths = [paths[row] for row in kept]
    if image_size is None:
        width, height = _file_size(kept_paths[0])
        image_size = (height, width)
    return ImageSet(images, np.asarray([new_label[label_of[row]] for row in kept],
                                       np.int32),
                    class_names, [name.rsplit("/", 1)[0] if "/" in name else ""
                                  for name in class_names],
                    kept_paths, tuple(image_size),
                    f"{origin} in {time.time() - started:.1f} s")


def _none_readable(data_dir, needed):
    return ValueError(f"no class folder in {data_dir!r} holds {needed} or more readable "
                      f"images: check the files' formats ({', '.join(IMAGE_EXTENSIONS)})")


def _load_cached(cache_dir, data_dir, settings, paths, shape, decode, strict):
    """(images, rows kept, where they came from) through the image cache: its files
    (image_cache.DiskImages), read batch by batch; in memory, training's peak grows by
    4 to 5 times their bytes, for no more speed (benchmarks/image_cache.py). The files
    skipped when it was built are warned about (or with `strict` raised) again."""
    decoded = []
    images, kept, problems = image_cache.open_or_build(
        cache_dir, data_dir, settings, paths, shape,
        lambda sink: decoded.append(True) or decode(sink))
    for problem in problems if not decoded else ():  # warned about when decoded
        _skip(problem, strict)
    verb = "decoded into" if decoded else "read from"
    return images, kept, f"{verb} the image cache {os.path.dirname(images.folder)}"


def _from_arrays(images, labels, downsample=1):
    """An ImageSet from bundled in-memory arrays (uint8 (N, H, W) and int labels)."""
    images = np.asarray(images, dtype=np.uint8)
    source_size = images.shape[1:3]
    names = [str(c) for c in np.unique(labels)]
    index = {c: i for i, c in enumerate(np.unique(labels))}
    labels = np.asarray([index[c] for c in labels], np.int32)
    return ImageSet(images[:, ::downsample, ::downsample, None], labels, names,
                    [""] * len(names), [""] * len(labels), tuple(source_size))


def load_digits(downsample=1):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    return _from_arrays(np.round(digits.images * (255.0 / 16.0)), digits.target,
                        downsample)


def load_olivetti(downsample=1):
    """The 40 AT&T people at 64x64, fetched once by scikit-learn and cached."""
    from sklearn.datasets import fetch_olivetti_faces
    try:
        faces = fetch_olivetti_faces()
    except OSError as error:  # URLError is an OSError
        raise RuntimeError(
            f"could not download the Olivetti faces ({error}). Offline, use "
            f"--dataset=att_faces --data_dir=PATH with the AT&T folders s1..s40, or "
            f"--dataset=digits, which needs no download") from error
    people = [f"s{label + 1}" for label in faces.target]
    imageset = _from_arrays(np.round(faces.images * 255.0), faces.target, downsample)
    imageset.class_names = sorted(set(people), key=_natural_key)
    return imageset


def load_mnist(downsample=1):
    """MNIST 28x28 (70,000 images), fetched once by Keras and cached."""
    import tf_setup  # noqa: F401  (quiet TensorFlow before Keras imports it)
    import keras
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # Keras raises a plain Exception on a failed download
        raise RuntimeError(
            f"could not download MNIST ({error}). Offline, use --dataset=digits, which "
            f"needs no download") from error
    return _from_arrays(np.concatenate([x_train, x_test]),
                        np.concatenate([y_train, y_test]), downsample)


# The mini Omniglot that ships with the repository (datasets/build_omniglot_mini.py).
OMNIGLOT_MINI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets",
                             "omniglot_mini")


def load_omniglot_mini(downsample=1):
    """Omniglot's background set at 28x28 (964 characters of 30 alphabets, 20 drawings
    each), shipped in datasets/omniglot_mini; classes are alphabet/character as when
    the original folders are read, and each class's group is its alphabet."""
    path = os.path.join(OMNIGLOT_MINI, "images_background.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: it ships with the repository, so restore it (git "
            f"checkout -- datasets/omniglot_mini) or rebuild it (python "
            f"datasets/build_omniglot_mini.py --omniglot=PATH)")
    with np.load(path, allow_pickle=False) as saved:
        images, labels, names = saved["images"], saved["labels"], saved["class_names"]
    imageset = _from_arrays(images, labels, downsample)
    imageset.class_names = [str(name) for name in names]
    imageset.groups = [name.rsplit("/", 1)[0] for name in imageset.class_names]
    return imageset


# name -> (size of its grey images, loader taking downsample)
BUILT_IN = {"digits": ("8x8", load_digits), "olivetti": ("64x64", load_olivetti),
            "mnist": ("28x28", load_mnist), "omniglot_mini": ("28x28", load_omniglot_mini)}


def load_dataset(config):
    """The ImageSet a config asks for."""
    name = config["dataset"]
    if name in BUILT_IN:
        # These settings shape folders of images; a built-in set would ignore them
        # (and predict.py would then expect images of the wrong shape).
        ignored = [f"--{key}={config[key]}" for key, unset in (
            ("data_dir", ""), ("image_size", None), ("channels", 1),
            ("max_images_per_class", 0)) if config[key] != unset]
        if ignored:
            raise ValueError(
                f"dataset={name!r} is built in ({BUILT_IN[name][0]} grey images), so "
                f"{' '.join(ignored)} would be ignored: for a folder of your own use "
                f"--dataset=folder --data_dir=PATH (--downsample works on {name})")
        return BUILT_IN[name][1](config["downsample"])
    # A class with one image gives no genuine pair: skipped, with a warning naming it.
    per_step = config["batch_size"] * (2 if config["pairing"] == "pairs" else 1)
    return load_folder(config["data_dir"], config["image_size"], config["downsample"],
                       config["channels"], config["max_images_per_class"],
                       min_images_per_class=2, strict=config["strict"],
                       cache_dir=cache_dir(config),
                       training_step=(per_step, config["architecture"]))


def cache_dir(config):
    """Where a config's folder images are cached: "" (none) with image_cache=False."""
    if not config["image_cache"]:
        return ""
    return os.path.expanduser(config["cache_dir"]) or image_cache.default_dir()


# --- splits and pairs ------------------------------------------------------------------

def split_classes(n_classes, test_fraction, val_fraction, rng):
    """Shuffle ids 0..n_classes-1 into disjoint (train, val, test) arrays of >= 2 each;
    test_fraction=0 leaves the test part empty (the test classes are another folder,
    as Koch's protocol tests on Omniglot's evaluation alphabets)."""
    n_test = max(2, int(round(n_classes * test_fraction))) if test_fraction else 0
    n_val = max(2, int(round((n_classes - n_test) * val_fraction)))
    if n_classes - n_test - n_val < 2:
        raise ValueError(
            f"{n_classes} classes are too few for test_fraction={test_fraction} and "
            f"val_fraction={val_fraction}: each part needs at least 2 classes. Lower "
            f"--test_fraction and --val_fraction, use a dataset with at least 6 classes, "
            f"or split pairs, not classes (--split=pairs --pairing=pairs "
            f"--loss=contrastive --monitor=val_loss)")
    order = rng.permutation(n_classes)
    return (np.sort(order[n_test + n_val:]), np.sort(order[n_test:n_test + n_val]),
            np.sort(order[:n_test]))


def make_pairs(labels, class_ids, n_genuine, n_impostor, rng):
    """Draw balanced pairs among the images of `class_ids`.

    Genuine pairs cycle through the classes in turn (as the AT&T faces tutorial draws
    the same number per person), each two different images of one class; impostor
    pairs take two different classes at random. Returns pairs int32 (P, 2) and labels
    float32 (P,) with 1 = genuine, 0 = impostor, shuffled.
    """
    members = [np.flatnonzero(labels == c) for c in class_ids]
    usable = [m for m in members if len(m) >= 2]
    if n_genuine and not usable:
        raise ValueError("no class has two images, so no genuine pair can be drawn")
    if n_impostor and len(members) < 2:
        raise ValueError("impostor pairs need at least two classes")

    sizes = np.array([len(m) for m in usable])
    which = np.resize(rng.permutation(len(usable)), n_genuine)
    first = rng.integers(0, sizes[which])
    second = (first + rng.integers(1, sizes[which])) % sizes[which]  # never itself
    genuine = np.stack([[usable[w][i] for w, i in zip(which, first)],
                        [usable[w][j] for w, j in zip(which, second)]], axis=1)

    n = len(members)
    class_a = rng.integers(0, n, n_impostor)
    class_b = (class_a + rng.integers(1, n, n_impostor)) % n  # always another class
    impostor = np.stack([[members[c][rng.integers(len(members[c]))] for c in class_a],
                         [members[c][rng.integers(len(members[c]))] for c in class_b]],
                        axis=1)

    pairs = np.concatenate([genuine.reshape(-1, 2), impostor.reshape(-1, 2)])
    y = np.concatenate([np.full(n_genuine, GENUINE), np.full(n_impostor, IMPOSTOR)])
    order = rng.permutation(len(y))
    return pairs[order].astype(np.int32), y[order].astype(np.float32)


def no_pairs():
    """(pairs, labels) of a part that holds none."""
    return np.zeros((0, 2), np.int32), np.zeros(0, np.float32)


def pairs_also_in(pairs, others):
    """Which rows of `pairs` (P, 2) also occur in `others`, either way round: (P,) bool.

    split="pairs" draws train and test pairs from one pool, so a test pair can be a
    training pair (AT&T: 1,800 genuine pairs exist, 10,000 are drawn)."""
    pairs, others = (np.sort(np.asarray(p, np.int64).reshape(-1, 2), axis=1)
                     for p in (pairs, others))
    stride = int(max(pairs.max(initial=0), others.max(initial=0))) + 1
    return np.isin(pairs[:, 0] * stride + pairs[:, 1], others[:, 0] * stride + others[:, 1])


@dataclass
class PairSplits:
    train: tuple  # (pairs, labels)
    val: tuple
    test: tuple
    class_split: dict  # "train"/"val"/"test" -> class ids (all classes for split="pairs")


def build_splits(imageset, config):
    """Train/val/test pairs as the config asks, reproducible from config["seed"]."""
    rng = np.random.default_rng(config["seed"])
    n_classes = len(imageset.class_names)
    total = config["total_sample_size"]
    test_fraction, val_fraction = config["test_fraction"], config["val_fraction"]
    if n_classes < 2:
        raise ValueError(f"{n_classes} class found: a Siamese network needs at least 2")

    if config["split"] == "pairs":
        everyone = np.arange(n_classes)
        pairs, y = make_pairs(imageset.labels, everyone, total, total, rng)
        n_test = int(round(len(y) * test_fraction))
        n_val = int(round((len(y) - n_test) * val_fraction))
        test, val, train = (slice(0, n_test), slice(n_test, n_test + n_val),
                            slice(n_test + n_val, None))
        return PairSplits((pairs[train], y[train]), (pairs[val], y[val]),
                          (pairs[test], y[test]),
                          {"train": everyone, "val": everyone, "test": everyone})

    if config["split"] == "groups":
        # Whole parent folders (Omniglot alphabets) go to one part: split them, then
        # take their classes.
        group_names = sorted(set(imageset.groups), key=_natural_key)
        if len(group_names) < 6:
            raise ValueError(
                f"split='groups' needs at least 6 parent folders of class folders (like "
                f"Omniglot's alphabets); {config['data_dir']!r} has {len(group_names)}. "
                f"Use --split=classes")
        group_of = np.array([group_names.index(g) for g in imageset.groups])
        parts = split_classes(len(group_names), test_fraction, val_fraction, rng)
        train_ids, val_ids, test_ids = (np.flatnonzero(np.isin(group_of, ids))
                                        for ids in parts)
    else:
        train_ids, val_ids, test_ids = split_classes(n_classes, test_fraction,
                                                     val_fraction, rng)
    shares = {"test": test_fraction, "val": (1 - test_fraction) * val_fraction}
    shares["train"] = 1 - shares["test"] - shares["val"]
    parts = {}
    for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
        n = max(1, int(round(total * shares[name]))) if len(ids) else 0
        parts[name] = make_pairs(imageset.labels, ids, n, n, rng) if n else no_pairs()
    return PairSplits(parts["train"], parts["val"], parts["test"],
                      {"train": train_ids, "val": val_ids, "test": test_ids})


def class_names_by_part(imageset, splits):
    """{"train": [class names], "val": [...], "test": [...]} of a split."""
    return {part: [imageset.class_names[c] for c in splits.class_split[part]]
            for part in ("train", "val", "test")}


def merge_validation(splits):
    """`splits` with the validation classes and pairs moved into training (refit=True:
    the final fit learns from every labelled class but the test ones)."""
    pairs = np.concatenate([splits.train[0], splits.val[0]])
    labels = np.concatenate([splits.train[1], splits.val[1]])
    classes = splits.class_split
    return PairSplits((pairs, labels), (pairs[:0], labels[:0]), splits.test,
                      {"train": np.union1d(classes["train"], classes["val"]),
                       "val": classes["val"][:0], "test": classes["test"]})


def _pixel_gatherer(images, augment, rotations=False):
    """index tensor -> float32 batch in [0, 255] (the model rescales), distorted if
    `augment` is given, gathered from one uint8 copy of `images` (an array in memory,
    or image_cache.DiskImages, read batch by batch). With `rotations`,
    index i + k * len(images) means image i turned by k x 90 degrees (see
    rotated_classes)."""
    import tf_setup  # noqa: F401
    import tensorflow as tf

    distort = augment or (lambda batch: batch)
    if isinstance(images, np.ndarray):
        pixels = tf.constant(images)

        def read(indices):
            return tf.cast(tf.gather(pixels, indices), tf.float32)
    else:  # image_cache.DiskImages: each batch's images read from their files
        def read(indices):
            return tf.cast(images.read_batch(indices), tf.float32)

    def read_turned(indices):  # on floats: TF's oneDNN logs an error line for uint8
        batch = read(indices % len(images))
        turns = tf.reshape(indices // len(images), [-1, 1, 1, 1])
        turned = batch
        for k in (1, 2, 3):
            turned = tf.where(turns == k, tf.image.rot90(batch, k), turned)
        return turned

    gather = read_turned if rotations else read
    return lambda indices: distort(gather(indices))


def _prefetched(data):
    """`data` prefetched, and sharded by element across the workers of a cluster:
    tf.distribute cuts each global batch into the replicas' slices and each worker
    keeps its own, so every worker trains on its share of every batch. (The default
    policy looks for files to split between workers, finds none here and says so
    before it falls back to the same.)"""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return data.with_options(options).prefetch(tf.data.AUTOTUNE)


def pair_dataset(images, pairs, labels, batch_size, shuffle=False, seed=0,
                 augment=None, first_epoch=0):
    """A tf.data pipeline yielding ((images_a, images_b), labels) batches.

    Only the index pairs are shuffled and batched; each batch's pixels are gathered
    from the one uint8 image array, as float32 in [0, 255] (the model rescales),
    and distorted by `augment` (see make_augmenter) if given.

    With `shuffle`, the pipeline is endless: epoch e is the pairs in the order of a
    stateless shuffle seeded by (seed, e), batched within the epoch, so the order is
    the same on one device or many (tf.distribute re-traces the pipeline, which
    reseeds a stateful shuffle). Give fit() steps_per_epoch = ceil(pairs / batch_size);
    a resumed run starts at `first_epoch`, so it sees the orders it had not seen yet.
    """
    import tensorflow as tf

    pixels_of = _pixel_gatherer(images, augment)
    all_pairs, all_labels = tf.constant(pairs), tf.constant(labels)

    def gather(indices):
        batch_pairs = tf.gather(all_pairs, indices)
        return ((pixels_of(batch_pairs[:, 0]), pixels_of(batch_pairs[:, 1])),
                tf.gather(all_labels, indices))

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(labels)), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    if shuffle:
        batches = tf.data.Dataset.counter(start=first_epoch).flat_map(one_epoch)
    else:
        batches = tf.data.Dataset.range(len(labels)).batch(batch_size)
    return _prefetched(batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE))


def image_dataset(images, labels, index_batches, augment=None, rotations=False):
    """A tf.data pipeline yielding (images, class labels) batches from index batches
    (see pk_batches), for the in-batch losses; `rotations` as in rotated_classes."""
    import tensorflow as tf

    pixels_of = _pixel_gatherer(images, augment, rotations)
    class_of = tf.constant(np.asarray(labels, np.int32))
    data = tf.data.Dataset.from_tensor_slices(np.asarray(index_batches, np.int32))
    return _prefetched(data.map(
        lambda indices: (pixels_of(indices), tf.gather(class_of, indices)),
        num_parallel_calls=tf.data.AUTOTUNE))
