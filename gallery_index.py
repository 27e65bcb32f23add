"""An approximate nearest-neighbour index of a gallery's embeddings, so that
identifying against a large gallery need not compare each query with every image.

faiss' HNSW graph (IndexHNSWFlat): each image is linked to M near ones on a few
layers, and a search walks the links towards a query, keeping EF_SEARCH candidates,
so it compares a query with a few thousand images instead of all. It may miss a
query's nearest image and return a next-nearest one: benchmarks/identify.py measures
how often, and how often that changes the best class. The distances to the images it
returns are exact (faiss sums the squared differences in float32, as
metrics.PairScorer does). Euclidean distance only: Koch's weighted-L1 head has no
index and is always searched image by image.

The index is kept beside the gallery's embedding cache (predict.Matcher.index_file)
with a fingerprint of the embeddings it holds: it is rebuilt when they change, and a
damaged file is reported and rebuilt, never trusted.
"""
import hashlib
import os
import warnings
import zipfile

import faiss
import numpy as np

import progress
import runs

# Gallery images from which predict.py searches an index: where benchmarks/identify.py
# measured it answering 3.4x as many queries a second as the exhaustive search, with
# the same answers (1.5x at 30,000 images, 1.3x at 10,000: not worth an approximate
# search; 7.1x at 300,000, 20.8x at 1,000,000). Its build, 30 s at 100,000 images on
# 2 cores, is kept on disk.
MIN_SIZE = 100_000
M = 32  # links per image
# Candidates kept while linking an image (a better graph, a slower build) and while
# searching (fewer misses, slower), chosen for a recall@1 of at least 0.99 at
# 1,000,000 images: the benchmark's was 0.991 with these (0.976 with EF_SEARCH 128,
# 0.996 with 1024); EF_CONSTRUCTION 100 built in half the time, to 0.950 at 128.
EF_CONSTRUCTION = 200
EF_SEARCH = 512
ADD_CHUNK = 16_384  # images added to the index at a time (its progress bar's step)
BATCH = 1024  # queries searched at a time (the progress bar's step)
MAX_NEIGHBOURS = 4096  # a query whose top classes this many neighbours do not settle
#                        is left to the exhaustive search
SETTINGS = f"HNSW{M},Flat efConstruction={EF_CONSTRUCTION}"  # in the fingerprint


def fingerprint(embeddings):
    """What the index of `embeddings` is stored under: the embeddings themselves, and
    how the index is built, so that one built otherwise is rebuilt, not reused."""
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    digest = hashlib.sha1(f"{SETTINGS}|{embeddings.shape}".encode())
    digest.update(embeddings.data)
    return digest.hexdigest()


def build(embeddings):
    """A faiss IndexHNSWFlat of float32 embeddings (N, D)."""
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    index = faiss.IndexHNSWFlat(embeddings.shape[1], M)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    for start in progress.steps("indexing the gallery", len(embeddings), ADD_CHUNK):
        index.add(embeddings[start:start + ADD_CHUNK])
    return index


def load_or_build(path, embeddings):
    """The index of `embeddings` stored at `path` when it holds these very embeddings,
    else one built now and stored there (atomically; a failed write only warns)."""
    key = fingerprint(embeddings)
    index = _read(path, key, np.shape(embeddings))
    if index is None:
        index = build(embeddings)
        try:
            runs.atomic_write(path, lambda temporary: np.savez(
                temporary, key=np.asarray(key), index=faiss.serialize_index(index)))
        except OSError as error:
            warnings.warn(f"could not write the gallery index {path}: {error}")
    return index


def _read(path, key, shape):
    """The index stored at `path` if it was built from the embeddings of
    fingerprint `key`; None (rebuild) when it is absent, of other embeddings, or
    unreadable (with a warning). Never unpickles."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None  # the gallery changed since: rebuilt without a word
            data = saved["index"]
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("its index is not a byte array")
        index = faiss.deserialize_index(data)
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise ValueError(f"it holds a {type(index).__name__}, not an HNSW index")
        if (index.ntotal, index.d) != tuple(shape):
            raise ValueError(f"it holds {index.ntotal} vectors of {index.d} dimensions "
                             f"for {shape[0]} of {shape[1]}")
        return index
    except (ValueError, OSError, KeyError, TypeError, RuntimeError, EOFError,
            zipfile.BadZipFile) as error:
        warnings.warn(f"ignoring the unreadable gallery index {path} ({error}); "
                      f"building it again")
        return None


def nearest_classes(index, queries, labels, top_k, ef_search=EF_SEARCH):
    """Each query's top_k classes by their nearest image, from the index: its nearest
    images are asked for, enough to hold top_k classes (more when they do not), and
    each class's distance is that of its nearest image among them. Returns (Q, k)
    distances, (Q, k) class indices (`labels` holds each gallery image's), nearest
    first, ties in class order, k = min(top_k, classes); and which queries were
    settled: the others (no top_k classes among MAX_NEIGHBOURS neighbours) are for
    an exhaustive search. `ef_search`: the candidates a search keeps."""
    queries = np.ascontiguousarray(queries, np.float32)
    n = index.ntotal
    n_classes = int(labels.max()) + 1
    top_k = min(top_k, n_classes)
    distances = np.zeros((len(queries), top_k))
    classes = np.zeros((len(queries), top_k), np.int64)
    settled = np.zeros(len(queries), bool)
    # Twice the images of top_k average classes: most queries settle at the first ask.
    k = min(n, MAX_NEIGHBOURS, 2 * top_k * -(-n // n_classes))
    pending = np.arange(len(queries))
    while len(pending):
        index.hnsw.efSearch = max(ef_search, k)  # it keeps at least the k it returns
        for start in progress.steps("searching the gallery index", len(pending), BATCH):
            rows = pending[start:start + BATCH]
            squared, found = index.search(queries[rows], k)
            found_distances = np.sqrt(np.maximum(squared, 1e-7))  # PairScorer's floor
            for row, ids, row_distances in zip(rows, found, found_distances):
                top = top_classes(row_distances[ids >= 0], labels[ids[ids >= 0]],
                                  top_k, complete=k == n or (ids < 0).any())
                if top is not None:
                    distances[row], classes[row] = top
                    settled[row] = True
        pending = pending[~settled[pending]]
        if k >= min(n, MAX_NEIGHBOURS):
            break
        k = min(n, MAX_NEIGHBOURS, 2 * k)
    return distances, classes, settled


def top_classes(distances, classes, top_k, complete):
    """(distances, classes) of the top_k classes among one query's neighbours, nearest
    first and ties in class order; None when they do not settle it: fewer than top_k
    classes among them, or, unless they are all the index could give (`complete`),
    the farthest no farther than the top_k-th class, which an image not returned
    could then tie or beat."""
    order = np.lexsort((classes, distances))
    distances, classes = distances[order], classes[order]
    _, first = np.unique(classes, return_index=True)
    first = np.sort(first)[:top_k]
    if len(first) < top_k or not (complete or distances[-1] > distances[first[-1]]):
        return None
    return distances[first], classes[first]
