"""evaluate.py and predict.py on a small trained run: evaluation files, verify, identify,
enrolment by adding a folder, and the gallery cache. A damaged run folder, gallery or
query is a one-line error naming the file at fault; a gallery cache is never unpickled
and file names never reach a shell."""
import argparse
import csv
import importlib.util
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
from configurator import get_config
from conftest import (REPO_ROOT, copy_run_with_its_data, load_with_warnings, save_image,
                      write_class_folders)


def test_verify_same_image_is_same_and_preprocesses_any_image(run_dir, tmp_path):
    matcher = predict.Matcher(run_dir)
    data_dir = json.load(open(os.path.join(run_dir, "config.json")))["data_dir"]
    a = os.path.join(data_dir, "person1", "1.png")
    assert matcher.verify(a, a)["distance"] < 1e-3 and matcher.verify(a, a)["same"]
    big_rgba = tmp_path / "big.png"  # another size and mode than training
    Image.new("RGBA", (90, 70), (200, 10, 10, 255)).save(big_rgba)
    result = matcher.verify(a, str(big_rgba))
    assert result["same"] == (result["distance"] < result["threshold"])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        matcher.verify(a, str(tmp_path / "nope.png"))


def test_identify_finds_enrolled_people_and_new_folders_without_retraining(run_dir,
                                                                         tmp_path):
    gallery = write_class_folders(tmp_path / "gallery", 4, per_class=2, seed=3)
    matcher = predict.Matcher(run_dir)
    embedded = []
    original = matcher.embed
    matcher.embed = lambda images: embedded.append(len(images)) or original(images)

    query = str(gallery / "person3" / "1.png")
    [result] = matcher.identify([query], str(gallery), top_k=2)
    assert result["top"][0][0] == "person3" and result["top"][0][1] < 1e-3
    assert result["match"] == "person3" and len(result["top"]) == 2
    assert embedded == [8, 1]  # the gallery once, then the query
    assert len(list(gallery.glob(".siamese-cache-*.npz"))) == 1

    matcher.identify([query], str(gallery))
    assert embedded[2:] == [1]  # unchanged gallery: only the query is embedded

    newcomer = write_class_folders(tmp_path / "new", 1, per_class=1, seed=5)
    os.rename(newcomer / "person1", gallery / "newcomer")
    new_query = str(gallery / "newcomer" / "1.png")
    [result] = matcher.identify([new_query], str(gallery))
    assert result["match"] == "newcomer"
    assert embedded[3:] == [1, 1]  # only the new file, then the query

    # A photo replaced by another of the same size and modification time (as unzip,
    # tar or `mv` leave it) is embedded again, not answered from the cache.
    (gallery / "twin").mkdir()
    photo = gallery / "twin" / "1.pgm"  # PGMs of one size have one length
    Image.open(gallery / "person1" / "1.png").save(photo)
    matcher.identify([query], str(gallery))
    assert embedded[5:] == [1, 1]
    stamp = os.stat(photo).st_mtime_ns
    other = gallery / "person2" / "1.png"
    Image.open(other).save(tmp_path / "swap.pgm")
    assert os.path.getsize(tmp_path / "swap.pgm") == os.path.getsize(photo)
    os.replace(tmp_path / "swap.pgm", photo)
    os.utime(photo, ns=(stamp, stamp))
    [result] = matcher.identify([str(other)], str(gallery), top_k=2)
    assert embedded[7:] == [1, 1]  # the replaced photo, then the query
    assert {name for name, _ in result["top"]} == {"person2", "twin"}
    assert result["top"][1][1] < 1e-3  # both folders now hold this very photo

    matcher.threshold = 0.0  # nobody is close enough
    [result] = matcher.identify([query], str(gallery))
    assert result["match"] == "unknown"


def test_identify_skips_an_unreadable_gallery_image_and_answers(run_dir, tmp_path):
    gallery = write_class_folders(tmp_path / "gallery", 3, per_class=2, seed=3)
    (gallery / "person2" / "broken.png").write_bytes(b"not a png")
    matcher = predict.Matcher(run_dir)
    query = str(gallery / "person3" / "1.png")
    with pytest.warns(UserWarning, match="broken.png.*left out of the gallery"):
        [result] = matcher.identify([query], str(gallery), top_k=3)
    assert result["match"] == "person3" and len(result["top"]) == 3
    for path in gallery.glob("*/*.png"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no readable image"), \
            pytest.warns(UserWarning, match="left out of the gallery"):
        matcher.identify([query], str(gallery))


def test_predict_cli(run_dir, capsys):
    data_dir = json.load(open(os.path.join(run_dir, "config.json")))["data_dir"]
    a = os.path.join(data_dir, "person1", "1.png")
    assert predict.main(["verify", run_dir, a, a]) == 0
    assert capsys.readouterr().out.startswith("same: distance")
    assert predict.main(["identify", run_dir, a, f"--gallery={data_dir}"]) == 0
    assert "person1" in capsys.readouterr().out
    assert predict.main(["verify", run_dir, a, "/missing.png"]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert predict.main(["identify", run_dir, a, f"--gallery={data_dir}",
                         "--top_k=0"]) == 2
    assert "top_k must be a whole number >= 1" in capsys.readouterr().err


def test_calibrate_stores_a_threshold_that_verify_and_identify_use_and_name(
        run_dir, tmp_path, capsys):
    gallery = write_class_folders(tmp_path / "gallery", 8, per_class=3, seed=5)
    assert predict.main(["calibrate", run_dir, f"--gallery={gallery}"]) == 0
    printed = capsys.readouterr().out
    assert "expected on the other 4 classes" in printed and "false accepts" in printed
    matcher = predict.Matcher(run_dir)
    stored = json.load(open(matcher.calibration_file(str(gallery))))
    a, b = str(gallery / "person2" / "1.png"), str(gallery / "person2" / "2.png")
    result = matcher.verify(a, b, str(gallery))
    assert result["threshold"] == stored["threshold"] != matcher.threshold
    assert result["threshold_source"].startswith(f"calibrated on the gallery {gallery}")
    assert result["same"] == (result["distance"] < stored["threshold"])
    assert 0 < result["similarity"] <= 1
    plain = matcher.verify(a, b)
    assert plain["threshold"] == matcher.threshold
    assert plain["threshold_source"] == "the run's, calibrated on its validation pairs"
    [found] = matcher.identify([a], str(gallery))
    assert found["threshold"] == stored["threshold"]
    assert found["threshold_source"] == result["threshold_source"]
    assert predict.main(["identify", run_dir, a, f"--gallery={gallery}"]) == 0
    assert f"calibrated on the gallery {gallery}" in capsys.readouterr().out


def test_identify_and_verify_warn_when_a_gallery_drifts_from_the_threshold(run_dir,
                                                                          tmp_path):
    gallery = write_class_folders(tmp_path / "gallery", 6, per_class=3, seed=6)
    query = str(gallery / "person1" / "1.png")
    matcher = predict.Matcher(run_dir)
    embeddings, owners, _ = matcher.gallery(str(gallery))
    spread = predict.calibration.impostor_summary(embeddings, owners, matcher.scorer)
    matcher.reference = spread  # a threshold set on classes like these: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matcher.identify([query], str(gallery))
    # One set on classes lying twice as far apart: both commands say so.
    matcher.reference = {key: 2 * value for key, value in spread.items()}
    with pytest.warns(UserWarning, match=r"lie outside those the threshold .* calibrate "):
        matcher.identify([query], str(gallery))
    with pytest.warns(UserWarning, match="lie outside those the threshold"):
        matcher.verify(query, query, str(gallery))


def test_a_gallery_of_one_image_per_class_cannot_be_calibrated(run_dir, tmp_path,
                                                               capsys):
    gallery = write_class_folders(tmp_path / "gallery", 6, per_class=1)
    assert predict.main(["calibrate", run_dir, f"--gallery={gallery}"]) == 2
    error = capsys.readouterr().err
    assert "every class holds one image" in error and "stays in use" in error
    assert not list(gallery.glob(".siamese-threshold-*.json"))


def test_shift_photos_copies_the_test_classes_in_four_takes(run_dir, tmp_path):
    shift_photos = load_example("shift_photos")
    assert shift_photos.main([f"--run_dir={run_dir}", f"--out={tmp_path}"]) == 0
    config = json.load(open(os.path.join(run_dir, "config.json")))
    for take in ("as_taken", "framing", "light", "both"):
        assert sorted(os.listdir(tmp_path / take)) == sorted(config["classes"]["test"])
    original = Image.open(os.path.join(config["data_dir"], config["classes"]["test"][0],
                                       "1.png"))
    taken = Image.open(tmp_path / "as_taken" / config["classes"]["test"][0] / "1.png")
    framed = np.asarray(Image.open(tmp_path / "framing" / config["classes"]["test"][0]
                                   / "1.png"))
    np.testing.assert_array_equal(np.asarray(taken), np.asarray(original))
    assert framed.shape == np.asarray(original).shape and framed[0, 0] == 128


def load_example(name):
    """examples/NAME.py as a module (examples/ is not a package)."""
    path = os.path.join(REPO_ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_identify_demo_enrols_unseen_people_from_one_image_each(run_dir, tmp_path,
                                                               capsys):
    # README's `python examples/identify_demo.py --run_dir=RUN`, on the small run.
    demo = load_example("identify_demo")
    gallery = tmp_path / "gallery"
    assert demo.main([f"--run_dir={run_dir}", f"--gallery={gallery}"]) == 0
    enrolled, added, where = capsys.readouterr().out.strip().split("\n")

    recorded = json.load(open(os.path.join(run_dir, "metrics.json")))
    test_people, newcomer = recorded["test_classes"], recorded["val_classes"][0]
    folders = sorted(p.name for p in gallery.iterdir() if p.is_dir())
    assert folders == sorted(test_people + [newcomer])
    for name in folders:  # each enrolled with its first image only
        assert [p.name for p in (gallery / name).iterdir()] == ["1.png"]
    n = len(test_people)
    assert enrolled.startswith(f"{n} unseen people enrolled with 1 image each")
    assert f"on their other {4 * n} images: top-1" in enrolled  # 5 images per person
    top1 = float(enrolled.split("top-1 ")[1].split()[0])
    assert top1 >= 1 / n + 0.25  # the blocks are easy: well above chance (1/n)
    assert added.startswith(f"added folder {newcomer!r} (no retraining)")
    assert "/4 of its other images" in added and where == f"gallery: {gallery}"


@pytest.mark.parametrize("config, metrics_json, reason", [
    ({"data_dir": "", "dataset": "digits", "split": "classes"}, {"val_classes": ["2"]},
     "built-in 'digits' data"),
    ({"data_dir": "faces", "dataset": "att_faces", "split": "pairs"},
     {"val_classes": ["s1"]}, "split='pairs'"),
    ({"data_dir": "faces", "dataset": "folder", "split": "classes"},
     {"val_classes": [], "refit_epochs": 3}, "refit=True"),
    ({"data_dir": "faces", "dataset": "folder", "split": "classes"},
     {"val_classes": []}, "no validation people"),
    ({"data_dir": "faces", "dataset": "folder", "split": "classes"}, {},
     "training did not finish"),
])
def test_identify_demo_says_why_a_run_cannot_show_enrolment(config, metrics_json,
                                                            reason):
    demo = load_example("identify_demo")
    assert reason in demo.demo_cannot_use(config, metrics_json)
    assert demo.demo_cannot_use(dict(config, data_dir="faces", split="classes"),
                                {"val_classes": ["s1"]}) is None


def test_identify_demo_refuses_what_it_cannot_use_without_a_traceback(run_dir, tmp_path,
                                                                    capsys):
    demo = load_example("identify_demo")
    used = tmp_path / "used"
    (used / "someone").mkdir(parents=True)  # the user's own gallery: not mixed in
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for argv, message in (
            ([f"--run_dir={tmp_path / 'none'}"], "does not exist"),
            ([f"--run_dir={run_dir}", f"--gallery={used}"], "is not empty"),
            ([f"--run_dir={run_dir}", f"--gallery={a_file}"], "is a file")):
        assert demo.main(argv) == 2
        assert message in capsys.readouterr().err
    assert os.listdir(used) == ["someone"]

    run, data = copy_run_with_its_data(run_dir, tmp_path / "copy")
    person = json.load(open(os.path.join(run, "metrics.json")))["test_classes"][0]
    (data / person).rename(data / "renamed")
    assert demo.main([f"--run_dir={run}"]) == 2
    assert f"{person}: the run's people are no longer class folders" in \
        capsys.readouterr().err


@pytest.mark.parametrize("scorer", [metrics.EUCLIDEAN,
                                    metrics.PairScorer(np.linspace(-1, 1, 8), 0.3)])
def test_vectorised_class_distances_equal_the_per_class_loop(scorer):
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 8)).astype(np.float32)
    owners = [f"c{k}" for k in rng.integers(0, 40, 300)]  # classes interleaved
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    names, labels = predict.class_labels(owners)
    distances, classes = predict.nearest_classes(queries, gallery, labels, len(names),
                                                 scorer, chunk_bytes=4096)  # chunks
    assert names == list(dict.fromkeys(owners))
    owners = np.asarray(owners)
    for query, row, columns in zip(queries, distances, classes):
        loop = scorer(gallery, query)
        np.testing.assert_allclose(row, [loop[owners == names[c]].min()
                                         for c in columns], rtol=1e-6)
        assert (np.diff(row) >= 0).all()


def test_nearest_classes_equal_the_per_class_loop_with_unequal_classes_and_ties():
    rng = np.random.default_rng(1)
    sizes = [1, 2, 7, 30, 3, 11, 1, 5]
    owners = np.repeat([f"k{i}" for i in range(len(sizes))], sizes)
    owners = owners[rng.permutation(len(owners))]
    gallery = rng.normal(size=(len(owners), 6)).astype(np.float32)
    gallery[owners == "k6"] = gallery[owners == "k1"][0]  # ties between classes
    queries = np.concatenate([rng.normal(size=(30, 6)), gallery[owners == "k6"]])
    names, labels = predict.class_labels(owners)
    assert names == list(dict.fromkeys(owners))  # in order of first appearance
    for top_k in (1, 3, 8, 20):
        distances, classes = predict.nearest_classes(queries, gallery, labels, top_k,
                                                     chunk_bytes=2048)
        for query, row, columns in zip(queries, distances, classes):
            loop = [metrics.EUCLIDEAN(gallery, query)[owners == name].min()
                    for name in names]
            ranked = sorted(range(len(names)), key=lambda c: loop[c])[:top_k]
            assert columns.tolist() == ranked  # sorted() keeps ties in class order
            np.testing.assert_allclose(row, [loop[c] for c in ranked], rtol=1e-6)
    tied = classes[-1, :2].tolist()  # the last query lies on k1's and k6's image
    assert sorted(tied) == tied == sorted(names.index(n) for n in ("k1", "k6"))


def test_identify_through_the_index_answers_as_the_exhaustive_search(run_dir, tmp_path,
                                                                     monkeypatch):
    gallery = write_class_folders(tmp_path / "gallery", 12, per_class=4, seed=4)
    queries = write_class_folders(tmp_path / "queries", 12, per_class=1, seed=9)
    matcher = predict.Matcher(run_dir)
    exact = matcher.identify([str(queries)], str(gallery), top_k=3)
    index_file = matcher.index_file(str(gallery))
    assert not os.path.exists(index_file)  # a small gallery has no index

    def assert_same_answers(results):
        for a, b in zip(exact, results, strict=True):
            assert (a["query"], a["match"]) == (b["query"], b["match"])
            assert [name for name, _ in a["top"]] == [name for name, _ in b["top"]]
            np.testing.assert_allclose([d for _, d in a["top"]],
                                       [d for _, d in b["top"]], rtol=1e-5)

    monkeypatch.setattr(predict.gallery_index, "MIN_SIZE", 48)
    assert_same_answers(matcher.identify([str(queries)], str(gallery), top_k=3))
    assert os.path.exists(index_file)
    # queries the index cannot settle are answered by the exhaustive search
    monkeypatch.setattr(predict.gallery_index, "MAX_NEIGHBOURS", 1)
    assert_same_answers(matcher.identify([str(queries)], str(gallery), top_k=3))

    modified = os.stat(index_file).st_mtime_ns
    newcomer = write_class_folders(tmp_path / "new", 1, per_class=1, seed=5)
    os.rename(newcomer / "person1", gallery / "newcomer")
    [result] = matcher.identify([str(gallery / "newcomer" / "1.png")], str(gallery))
    assert result["match"] == "newcomer"
    assert os.stat(index_file).st_mtime_ns != modified  # rebuilt with the newcomer


def test_identify_a_folder_of_queries_to_csv_and_keep_an_existing_csv(run_dir,
                                                                      tmp_path, capsys):
    gallery = write_class_folders(tmp_path / "gallery", 12, per_class=3, seed=4)
    queries = tmp_path / "queries"
    write_class_folders(queries / "batch10", 2, per_class=1, seed=9)
    write_class_folders(queries / "batch2", 12, per_class=1, seed=9)
    (queries / "batch2" / "notes.txt").write_text("not an image")
    csv_file = tmp_path / "identified.csv"
    with pytest.warns(UserWarning, match="skipping 1 file.* not images .*notes.txt"):
        assert predict.main(["identify", run_dir, str(queries), f"--gallery={gallery}",
                             "--top_k=2", f"--csv={csv_file}"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {csv_file}: 14 queries" in printed and "person" not in printed
    with open(csv_file, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["query", "match", "distance", "similarity", "top1",
                       "top1_distance", "top2", "top2_distance"]
    expected = ([f"batch2/person{k}" for k in range(1, 13)]
                + [f"batch10/person{k}" for k in (1, 2)])  # natural order: 2 before 10
    assert [os.path.relpath(row[0], queries).replace(os.sep, "/").rsplit("/", 1)[0]
            for row in rows[1:]] == expected
    for row in rows[1:]:
        person = os.path.basename(os.path.dirname(row[0]))
        assert row[4] == person and float(row[2]) == float(row[5])
        assert row[1] in (person, "unknown") and 0 < float(row[3]) <= 1

    before = csv_file.read_bytes()
    message = _cli_error(capsys, ["identify", run_dir, str(queries),
                                  f"--gallery={gallery}", f"--csv={csv_file}"])
    assert message == (f"--csv={csv_file} already exists: pass another file name, or "
                       f"--overwrite to replace it")
    assert csv_file.read_bytes() == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert predict.main(["identify", run_dir, str(queries / "batch10"),
                             f"--gallery={gallery}", f"--csv={csv_file}", "--top_k=3",
                             "--overwrite"]) == 0
    with open(csv_file, newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 3 and rows[0][-2:] == ["top3", "top3_distance"]
    assert _cli_error(capsys, ["identify", run_dir, str(queries), f"--gallery={gallery}",
                               f"--csv={tmp_path / 'no' / 'x.csv'}"]).endswith(
        "does not exist: create it, or pass a file in an existing folder")


def _png_bytes():
    noise = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    return buffer.getvalue()


# --- predict.py on damaged run folders, galleries and queries ---------------------------

@pytest.fixture(scope="module")
def digits_run_dir(tmp_path_factory):
    """A real (tiny, 1-epoch) digits run: the model files predict.py needs."""
    import train
    out = tmp_path_factory.mktemp("runs")
    return train.train(get_config(dataset="digits", out_dir=str(out), epochs=1,
                                  total_sample_size=200,
                                  batch_size=32, trials=20))


@pytest.fixture
def images(tmp_path):
    """A query image and a small gallery of two people."""
    query = save_image(tmp_path / "query.png", 120, size=(8, 8))
    for person, value in (("alice", 30), ("bob", 220)):
        for i in (1, 2):
            save_image(tmp_path / "gallery" / person / f"{i}.png", value + i, size=(8, 8))
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
def test_damaged_run_folder_is_a_clear_cli_error_naming_the_file(digits_run_dir,
                                                                 tmp_path, capsys, images,
                                                                 damage):
    files, expected = DAMAGE[damage]
    damaged = _copy_run(digits_run_dir, tmp_path, **files)
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


def test_config_from_an_older_version_without_distance_still_works(digits_run_dir,
                                                                   tmp_path, images):
    with open(os.path.join(digits_run_dir, "config.json")) as handle:
        config = json.load(handle)
    del config["distance"]  # written only since Koch's head was added
    old = _copy_run(digits_run_dir, tmp_path,
                    **{"config.json": json.dumps(config).encode(),
                       "evaluation.json": None})
    with pytest.warns(UserWarning, match="no evaluation.json: deciding by the write-ups'"):
        matcher = predict.Matcher(old)
    assert matcher.threshold == config["margin"] / 2
    assert matcher.verify(images[0], images[0])["same"]


@pytest.mark.parametrize("kind", ["missing", "empty", "a file", "no class folders"])
def test_unusable_gallery_is_a_clear_cli_error_naming_it(digits_run_dir, tmp_path,
                                                         capsys, images, kind):
    gallery = tmp_path / f"gallery_{kind.replace(' ', '_')}"
    if kind == "empty":
        gallery.mkdir()
    elif kind == "a file":
        gallery.write_text("")
    elif kind == "no class folders":
        save_image(gallery / "alice.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = _cli_error(capsys, ["identify", digits_run_dir, images[0],
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
def test_unusable_query_is_a_clear_cli_error_naming_it(digits_run_dir, tmp_path, capsys,
                                                       images, kind):
    query = tmp_path / "query_file.png"
    if kind == "a folder":
        query.mkdir()
    elif kind == "truncated":
        query.write_bytes(_png_bytes()[:300])
    elif kind == "not an image":
        query.write_text("hello")
    expected = {"missing": f"image {str(query)!r} does not exist",
                "a folder": f"query folder {str(query)!r} holds no image file",
                "truncated": f"cannot read image {str(query)!r} (image file is "
                             f"truncated): replace or remove it",
                "not an image": f"cannot read image {str(query)!r} (cannot identify "
                                f"image file"}[kind]
    message = _cli_error(capsys, ["identify", digits_run_dir, str(query),
                                  f"--gallery={images[1]}"])
    assert message.startswith(expected)
    if kind == "a folder":  # verify takes no folder: it compares two images
        expected = f"image {str(query)!r} is a folder, not an image file"
    message = _cli_error(capsys, ["verify", digits_run_dir, images[0], str(query)])
    assert message.startswith(expected)


# --- safety: no unpickling, no shell ----------------------------------------------------

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
def test_bad_gallery_cache_is_never_unpickled_and_is_rebuilt(digits_run_dir, tmp_path,
                                                            images, kind):
    query, gallery = images
    matcher = predict.Matcher(digits_run_dir)
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
        digits_run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "my data; rm -rf ~"
    for person in (SHELL_LIKE, "plain"):
        for i in (1, 2):
            save_image(data / person / f"photo {i}; 'x' \"y\" $(z).png", 40 * i, size=(8, 8))
    imageset, caught = load_with_warnings(str(data))
    assert sorted(imageset.class_names) == sorted([SHELL_LIKE, "plain"])
    assert len(imageset.paths) == 4 and caught == []

    query = str(data / SHELL_LIKE / "photo 1; 'x' \"y\" $(z).png")
    assert predict.main(["identify", digits_run_dir, query, f"--gallery={data}"]) == 0
    threshold_line, answer = capsys.readouterr().out.splitlines()
    assert threshold_line.startswith("threshold ") and answer.startswith(f"{query}: ")
    assert predict.main(["verify", digits_run_dir, query, query]) == 0
    assert capsys.readouterr().out.startswith("same: distance")
    assert os.listdir(tmp_path) == ["my data; rm -rf ~"]  # no PWNED file anywhere


# --- predict.py -h ----------------------------------------------------------------
def _commands():
    parser = predict.build_parser()
    action = next(action for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction))
    return parser, action.choices


def test_every_argument_of_every_command_has_a_help_string():
    _, commands = _commands()
    assert set(commands) == {"verify", "identify", "calibrate"}
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"predict.py {name} {action.dest} has no help"
        assert "a run folder written by train.py" in command.format_help()


def test_description_says_it_takes_a_command_and_paths_not_settings():
    parser, _ = _commands()
    description = " ".join(parser.format_help().split())
    assert "python predict.py verify RUN IMG_A IMG_B" in description
    assert ("Unlike train.py and evaluate.py, which take --key=value settings, "
            "predict.py takes a command (verify, identify or calibrate) and positional paths"
            in description)


def test_arguments_parse_as_before():
    parser, _ = _commands()
    args = parser.parse_args(["identify", "RUN", "q1.jpg", "q2.jpg", "--gallery=DIR"])
    assert (args.command, args.run_dir, args.queries, args.gallery, args.top_k) == \
        ("identify", "RUN", ["q1.jpg", "q2.jpg"], "DIR", 3)
    args = parser.parse_args(["verify", "RUN", "IMG_A", "IMG_B"])
    assert (args.command, args.run_dir, args.image_a, args.image_b) == \
        ("verify", "RUN", "IMG_A", "IMG_B")
