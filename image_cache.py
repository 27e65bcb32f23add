"""Decoded images on disk: a folder's images are decoded and resized once, into raw
uint8 files that later runs, evaluate.py and every worker of a cluster read instead of
the image files.

A cache lives in cache_dir/<slot>/, one slot per data folder and preprocessing
(prepare_data passes image_size, downsample, channels, max_images_per_class):

    images-<key>/NNNNN/NNNNNNNNN.u8   image i, (H, W, C) uint8, in folder i // 1000
    index.json                        what they are: shape, key, files left out and why

<key> digests every file's path, size, modification and change times, so a file
changed, replaced, added or removed gives another key and the slot is rebuilt. The
images are written in a temporary folder renamed when complete, and index.json is
replaced last, so a cache is whole or absent; one that does not match its index (a
truncated or missing image file, a broken index) is rebuilt with a warning.

One file per image, because TensorFlow reads a file natively (tf.io.read_file) in
its own threads: a batch is read without Python, and so without the interpreter's
lock, which a reader in Python (tf.numpy_function) needs and can deadlock on when
Keras drops a tf.data iterator. Reads go through the operating system's page cache,
which keeps what memory allows, so a dataset larger than memory trains with a few
batches in memory at a time.
"""
import fcntl
import hashlib
import json
import os
import shutil
import warnings

import numpy as np

FORMAT = 1  # raise when decoding changes, so that no cache of the old pixels is used
INDEX = "index.json"


def default_dir():
    """$XDG_CACHE_HOME/siamese/images, or ~/.cache/siamese/images."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".cache")
    return os.path.join(root, "siamese", "images")


def files_key(paths):
    """A digest of the files' paths, sizes, modification and change times. The change
    time matters: `cp -p`, tar and unzip carry a modification time over, so a file
    replaced by another of the same size would otherwise look unchanged."""
    digest = hashlib.sha256()
    for path in paths:
        info = os.stat(path)
        digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}|{info.st_ctime_ns}\n"
                      .encode())
    return digest.hexdigest()[:24]


def slot_dir(cache_dir, data_dir, settings):
    """The folder of one data folder's cache under one set of preprocessing settings."""
    name = json.dumps([FORMAT, os.path.realpath(data_dir), settings], sort_keys=True)
    tail = os.path.basename(os.path.normpath(data_dir)) or "data"
    return os.path.join(cache_dir, f"{tail}-{hashlib.sha256(name.encode()).hexdigest()[:16]}")


def row_path(folder, row):
    return os.path.join(folder, f"{row // 1000:05d}", f"{row:09d}.u8")


class DiskImages:
    """uint8 images (N, H, W, C), one raw file each in `folder`, read on demand:
    images[rows] reads those files, so memory holds what was asked for. A tf.data
    pipeline reads them with read_batch (TensorFlow's own file reads)."""

    def __init__(self, folder, shape):
        self.folder, self.shape = folder, tuple(int(n) for n in shape)
        self.dtype, self.ndim = np.dtype(np.uint8), len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:]))

    def __len__(self):
        return self.shape[0]

    @property
    def nbytes(self):
        return len(self) * self.row_bytes

    def __getitem__(self, index):
        if isinstance(index, tuple):  # images[rows, ...]: rows first, then the rest
            return self[index[0]][(slice(None),) + index[1:]]
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, slice):
            rows = np.arange(*index.indices(len(self)))
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
            rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
                raise IndexError(f"row {int(rows.max())} is out of range for "
                                 f"{len(self)} images")
        out = np.empty((rows.size, self.row_bytes), np.uint8)
        for i, row in enumerate(rows.ravel()):
            with open(row_path(self.folder, int(row)), "rb") as handle:
                if handle.readinto(out[i]) != self.row_bytes:
                    raise OSError(f"the image cache {self.folder} is damaged (image "
                                  f"{row} is short): delete that folder, and the next "
                                  f"run decodes the images again")
        return out.reshape(rows.shape + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)

    def read_batch(self, rows):
        """TensorFlow: the uint8 batch (B, H, W, C) of a row-index tensor (B,)."""
        import tensorflow as tf

        rows = tf.cast(rows, tf.int64)
        paths = tf.strings.join([
            self.folder + os.sep,
            tf.strings.as_string(rows // 1000, width=5, fill="0"), os.sep,
            tf.strings.as_string(rows, width=9, fill="0"), ".u8"])
        flat = tf.map_fn(lambda path: tf.io.decode_raw(tf.io.read_file(path), tf.uint8),
                         paths, fn_output_signature=tf.TensorSpec([self.row_bytes],
                                                                  tf.uint8),
                         parallel_iterations=64)
        return tf.reshape(flat, [-1, *self.shape[1:]])


class FolderSink:
    """Where decoded images go when building a cache: image i into its own file."""

    def __init__(self, folder, shape):
        self.folder, self.shape = folder, tuple(shape)
        for first in range(0, shape[0], 1000):
            os.makedirs(os.path.dirname(row_path(folder, first)))

    def __setitem__(self, row, image):
        with open(row_path(self.folder, row), "wb") as handle:
            handle.write(np.ascontiguousarray(image).data)

    def keep_rows(self, rows):
        """Renumber `rows` (ascending) 0, 1, 2, ... and remove the others."""
        kept = set(int(row) for row in rows)
        for row in range(self.shape[0]):
            if row not in kept and os.path.exists(row_path(self.folder, row)):
                os.remove(row_path(self.folder, row))
        for new, old in enumerate(rows):
            if new != old:
                os.rename(row_path(self.folder, int(old)), row_path(self.folder, new))


def _check_complete(folder, shape):
    """Raise ValueError unless `folder` holds shape[0] image files of the right size."""
    row_bytes, found = int(np.prod(shape[1:])), 0
    for first in range(0, shape[0], 1000):
        with os.scandir(os.path.dirname(row_path(folder, first))) as entries:
            for entry in entries:
                if entry.stat().st_size != row_bytes:
                    raise ValueError(f"{entry.path} holds {entry.stat().st_size} bytes, "
                                     f"not {row_bytes}")
                found += 1
    if found != shape[0]:
        raise ValueError(f"it holds {found} image files, not {shape[0]}")


def _read_index(slot, key, shape):
    """The index of a whole cache of these files and shape, else None; a damaged one
    is warned about (and then rebuilt)."""
    path = os.path.join(slot, INDEX)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            index = json.load(handle)
        if index.get("key") != key:
            return None  # the files changed
        if (tuple(index["shape"][1:]) != tuple(shape)
                or len(index["kept"]) != index["shape"][0]):
            raise ValueError(f"its index does not match images of shape {shape}")
        _check_complete(os.path.join(slot, index["images"]), index["shape"])
        return index
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"the image cache in {slot} is damaged ({error}); decoding the "
                      f"images again")
        return None


def _write_index(slot, index):
    temporary = os.path.join(slot, f"{INDEX}.tmp-{os.getpid()}")
    with open(temporary, "w") as handle:
        json.dump(index, handle)
    os.replace(temporary, os.path.join(slot, INDEX))


def open_or_build(cache_dir, data_dir, settings, paths, shape, decode):
    """(DiskImages of the kept images, their rows in `paths`, the problems met when
    decoding) from the cache of `paths` at `shape`, built first if it is absent, stale
    or damaged: decode(sink) decodes every path into sink[i] and returns (kept rows,
    problems). Processes that start together (the workers of a cluster) build it
    once: the others wait for it."""
    slot = slot_dir(cache_dir, data_dir, settings)
    try:
        os.makedirs(slot, exist_ok=True)
        lock = open(os.path.join(slot, "lock"), "w")
    except OSError as error:
        raise OSError(f"cannot write the image cache in {slot} ({error.strerror}): pass "
                      f"--cache_dir=PATH to a folder you can write to, or "
                      f"--image_cache=False to decode into memory instead") from error
    key = files_key(paths)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = _read_index(slot, key, shape)
        if index is None:
            index = _build(slot, key, paths, shape, decode)
    images = DiskImages(os.path.join(slot, index["images"]), index["shape"])
    return images, np.asarray(index["kept"], np.int64), index["problems"]


def _build(slot, key, paths, shape, decode):
    needed = len(paths) * max(4096, int(np.prod(shape)))  # a file takes a block or more
    free = shutil.disk_usage(slot).free
    if needed > free:
        raise OSError(f"the image cache needs {needed / 1e9:.1f} GB in {slot} and the "
                      f"disk has {free / 1e9:.1f} GB free: pass --cache_dir=PATH on "
                      f"another disk, or a smaller --image_size")
    if os.path.exists(os.path.join(slot, INDEX)):  # no index of a partial cache
        os.remove(os.path.join(slot, INDEX))
    for name in os.listdir(slot):  # older versions, and what a killed build left
        if name.startswith("images-"):
            shutil.rmtree(os.path.join(slot, name))
    name = f"images-{key}"
    temporary = os.path.join(slot, f"{name}.tmp-{os.getpid()}")
    try:
        sink = FolderSink(temporary, (len(paths), *shape))
        kept, problems = decode(sink)
        if len(kept) < len(paths):
            sink.keep_rows(kept)
        os.rename(temporary, os.path.join(slot, name))
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary)
    index = dict(format=FORMAT, key=key, images=name, shape=[len(kept), *shape],
                 kept=[int(row) for row in kept], problems=problems)
    _write_index(slot, index)
    return index
