"""gallery_index.py: the index's answers against the exhaustive search, and its file
beside the gallery: reused while the embeddings are the same, rebuilt when they change,
and rebuilt with a warning, never trusted or unpickled, when it is damaged."""
import pickle

import numpy as np
import pytest

import gallery_index
import predict


def clustered(n_classes=60, per_class=(3, 12), dims=16, seed=0):
    """(embeddings, class labels, queries): classes of unequal sizes around random
    centres, interleaved, and one new query near each of 40 classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dims))
    labels = np.repeat(np.arange(n_classes), rng.integers(*per_class, n_classes))
    labels = labels[rng.permutation(len(labels))]
    embeddings = centres[labels] + 0.1 * rng.normal(size=(len(labels), dims))
    queries = centres[:40] + 0.1 * rng.normal(size=(40, dims))
    return embeddings.astype(np.float32), labels, queries.astype(np.float32)


def test_index_answers_equal_the_exhaustive_search_on_a_clustered_gallery(tmp_path):
    embeddings, labels, queries = clustered()
    index = gallery_index.load_or_build(str(tmp_path / "index.npz"), embeddings)
    distances, classes, settled = gallery_index.nearest_classes(
        index, queries, labels, top_k=3)
    exact_distances, exact_classes = predict.nearest_classes(queries, embeddings,
                                                             labels, top_k=3)
    assert settled.all()
    np.testing.assert_array_equal(classes, exact_classes)
    np.testing.assert_allclose(distances, exact_distances, rtol=1e-6)
    assert (classes[:, 0] == np.arange(40)).all()


def test_neighbours_grow_until_they_hold_top_k_classes(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), [150] + [3] * 9)  # one class crowds the rest
    embeddings = (rng.normal(size=(10, 8))[labels]
                  + 0.1 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    queries = embeddings[[0, 160]] + np.float32(0.01)
    index = gallery_index.load_or_build(str(tmp_path / "index.npz"), embeddings)
    searched = []
    original = index.search
    monkeypatch.setattr(index, "search", lambda x, k: searched.append((len(x), k))
                        or original(x, k), raising=False)
    _, classes, settled = gallery_index.nearest_classes(index, queries, labels,
                                                        top_k=3)
    # first 2 x 3 classes x 18 images (the mean class, rounded up): for the query in
    # the crowded class all of it, one class; it alone is asked again, for all 177
    assert searched == [(2, 108), (1, 177)] and settled.all()
    np.testing.assert_array_equal(
        classes, predict.nearest_classes(queries, embeddings, labels, top_k=3)[1])

    monkeypatch.setattr(gallery_index, "MAX_NEIGHBOURS", 2)  # 2 images: < 3 classes
    _, _, settled = gallery_index.nearest_classes(index, queries, labels,
                                                  top_k=3)
    assert not settled.any()  # left to the exhaustive search


def test_top_classes_keep_class_order_on_ties_and_refuse_an_unsettled_list():
    distances = np.array([0.5, 0.2, 0.4, 0.2, 0.5])
    classes = np.array([4, 3, 1, 2, 1])
    top, names = gallery_index.top_classes(distances, classes, 3, complete=False)
    assert names.tolist() == [2, 3, 1] and top.tolist() == [0.2, 0.2, 0.4]
    # the farthest neighbour ties the 4th class: an image not returned could too
    assert gallery_index.top_classes(distances, classes, 4, complete=False) is None
    assert gallery_index.top_classes(distances, classes, 4, complete=True)[1].tolist() \
        == [2, 3, 1, 4]
    assert gallery_index.top_classes(distances, classes, 5, complete=True) is None


def test_index_is_reused_while_the_embeddings_stay_and_rebuilt_when_they_change(
        tmp_path, monkeypatch):
    embeddings, _, _ = clustered()
    path = str(tmp_path / "index.npz")
    built = []
    original = gallery_index.build
    monkeypatch.setattr(gallery_index, "build",
                        lambda e: built.append(len(e)) or original(e))
    gallery_index.load_or_build(path, embeddings)
    assert gallery_index.load_or_build(path, embeddings).ntotal == len(embeddings)
    assert built == [len(embeddings)]  # the second came from the file
    changed = embeddings.copy()
    changed[7] += 1  # a photo replaced
    gallery_index.load_or_build(path, changed)
    enrolled = np.concatenate([embeddings, embeddings[:3] + 2])  # a person added
    assert gallery_index.load_or_build(path, enrolled).ntotal == len(enrolled)
    assert built == [len(embeddings), len(embeddings), len(enrolled)]
    with np.load(path, allow_pickle=False) as saved:
        assert str(saved["key"]) == gallery_index.fingerprint(enrolled)


class _Payload:
    """Unpickling this would create the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _damage(kind, path, embeddings, marker):
    key = np.asarray(gallery_index.fingerprint(embeddings))
    if kind == "garbage":
        path.write_bytes(b"not an index")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "pickled objects":
        np.savez(path, key=key, index=np.array([_Payload(marker)], dtype=object))
    elif kind == "a pickle stream":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    elif kind == "no index in it":
        np.savez(path, key=key)
    elif kind == "index bytes garbled":
        np.savez(path, key=key, index=np.frombuffer(b"garbage!" * 40, np.uint8))
    elif kind == "index of floats":
        np.savez(path, key=key, index=np.zeros(40))
    elif kind == "an index of another kind":
        flat = gallery_index.faiss.IndexFlatL2(embeddings.shape[1])
        flat.add(embeddings)
        np.savez(path, key=key, index=gallery_index.faiss.serialize_index(flat))
    elif kind == "index of other images":
        other = gallery_index.build(embeddings[:50])
        np.savez(path, key=key, index=gallery_index.faiss.serialize_index(other))


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "pickled objects",
                                  "a pickle stream", "no index in it",
                                  "index bytes garbled", "index of floats",
                                  "an index of another kind", "index of other images"])
def test_a_damaged_index_file_is_never_trusted_and_is_rebuilt(tmp_path, kind):
    embeddings, labels, queries = clustered()
    path = tmp_path / "index.npz"
    gallery_index.load_or_build(str(path), embeddings)
    marker = tmp_path / "UNPICKLED"
    _damage(kind, path, embeddings, str(marker))
    with pytest.warns(UserWarning, match=f"ignoring the unreadable gallery index "
                                         f"{path} .*building it again"):
        index = gallery_index.load_or_build(str(path), embeddings)
    assert not marker.exists()
    assert index.ntotal == len(embeddings)
    _, classes, _ = gallery_index.nearest_classes(index, queries, labels, 1)
    assert (classes[:, 0] == np.arange(40)).all()
    gallery_index.load_or_build(str(path), embeddings)  # rewritten: read back quietly


def test_an_index_that_cannot_be_written_warns_and_still_answers(tmp_path):
    embeddings, _, _ = clustered()
    with pytest.warns(UserWarning, match="could not write the gallery index"):
        index = gallery_index.load_or_build(str(tmp_path / "no" / "index.npz"),
                                            embeddings)
    assert index.ntotal == len(embeddings)
