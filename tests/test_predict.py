"""evaluate.py and predict.py on a small trained run: evaluation files, verify, identify,
enrolment by adding a folder, and the gallery cache."""
import argparse
import importlib.util
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from configurator import get_config
from conftest import REPO_ROOT, write_class_folders


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = write_class_folders(tmp_path_factory.mktemp("data"), 12)
    config = get_config(dataset="folder", data_dir=str(data), channels=1,
                        image_size=(24, 24), architecture="digits", epochs=3,
                        total_sample_size=400, batch_size=32, trials=50,
                        out_dir=str(tmp_path_factory.mktemp("runs")))
    return train.train(config)


def test_training_writes_the_evaluation(run_dir):
    with open(os.path.join(run_dir, "evaluation.json")) as handle:
        results = json.load(handle)
    for key in ("test_pair_accuracy", "threshold", "roc_auc", "eer", "oneshot_accuracy",
                "pixel_nn_oneshot_accuracy", "ways", "trials", "oneshot_curve"):
        assert key in results
    assert results["ways"] == len(results["test_classes"])  # fewer than 20 test classes
    assert results["chance"] == pytest.approx(1 / results["ways"])
    for plot in ("roc.png", "distance_hist.png", "oneshot_curve.png",
                 "oneshot_examples.png", "embeddings.png"):
        assert os.path.getsize(os.path.join(run_dir, plot)) > 1000


def test_evaluate_script_reproduces_the_training_evaluation(run_dir, tmp_path):
    assert evaluate.main([f"--run_dir={run_dir}", f"--report_dir={tmp_path}"]) == 0
    with open(os.path.join(run_dir, "evaluation.json")) as handle:
        during_training = json.load(handle)
    with open(tmp_path / "evaluation.json") as handle:
        afterwards = json.load(handle)
    for key in ("test_pair_accuracy", "threshold", "oneshot_accuracy", "test_classes"):
        assert afterwards[key] == pytest.approx(during_training[key], abs=1e-5)


def test_evaluate_on_another_folder_treats_every_class_as_unseen(run_dir, tmp_path):
    other = write_class_folders(tmp_path / "other", 5, seed=9)
    report = tmp_path / "report"
    results = evaluate.evaluate_run(run_dir, {"data_dir": str(other), "ways": 5},
                                    report_dir=str(report))
    assert results["test_classes"] == [f"person{k}" for k in range(1, 6)]
    assert results["ways"] == 5 and (report / "evaluation.json").exists()


def test_evaluate_on_the_training_folder_spelled_otherwise_keeps_the_run_split(
        run_dir, tmp_path, monkeypatch):
    data_dir = json.load(open(os.path.join(run_dir, "config.json")))["data_dir"]
    trained = json.load(open(os.path.join(run_dir, "evaluation.json")))
    monkeypatch.chdir(os.path.dirname(data_dir))  # relative, with a trailing slash
    results = evaluate.evaluate_run(
        run_dir, {"data_dir": os.path.basename(data_dir) + os.sep},
        report_dir=str(tmp_path))
    assert results["test_classes"] == trained["test_classes"]
    assert results["oneshot_accuracy"] == pytest.approx(trained["oneshot_accuracy"])


def _run_on_a_copy_of_its_data(run_dir, tmp_path):
    """A copy of the run folder whose config.json points at a copy of its data."""
    import shutil

    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    shutil.copytree(config["data_dir"], data)
    (run / "config.json").write_text(json.dumps(dict(config, data_dir=str(data))))
    return str(run), data


@pytest.mark.parametrize("change, named", [("add", "added: person13"),
                                           ("remove", "gone: person2")])
def test_evaluate_refuses_a_training_folder_whose_classes_changed(run_dir, tmp_path,
                                                                  capsys, change,
                                                                  named):
    # The split is drawn again from the folder: with a class more or less it would be
    # another split, and training people could be reported as never seen.
    import shutil

    run, data = _run_on_a_copy_of_its_data(run_dir, tmp_path)
    before = (tmp_path / "run" / "evaluation.json").read_text()
    if change == "add":
        shutil.copytree(data / "person1", data / "person13")
    else:
        shutil.rmtree(data / "person2")
    assert evaluate.main([f"--run_dir={run}"]) == 2
    error = capsys.readouterr().err
    assert named in error and "could count training classes as unseen" in error
    assert (tmp_path / "run" / "evaluation.json").read_text() == before  # kept


def test_evaluate_on_another_folder_refuses_classes_the_run_trained_on(run_dir,
                                                                      tmp_path, capsys):
    # Links into the training folder (or a sub-folder of it) are not unseen classes;
    # links to its test classes are.
    config = json.load(open(os.path.join(run_dir, "config.json")))
    parts = config["classes"]
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in parts["test"] + parts["train"][:2]:
        os.symlink(os.path.join(config["data_dir"], name), linked / name)
    assert evaluate.main([f"--run_dir={run_dir}", f"--data_dir={linked}"]) == 2
    error = capsys.readouterr().err
    assert f"2 class(es) of {str(linked)!r}" in error and parts["train"][0] in error
    for name in parts["train"][:2]:
        os.remove(linked / name)
    results = evaluate.evaluate_run(run_dir, {"data_dir": str(linked)},
                                    report_dir=str(tmp_path / "report"))
    assert sorted(results["test_classes"]) == sorted(parts["test"])


def test_evaluate_reports_on_two_folders_of_one_name_side_by_side(run_dir, tmp_path,
                                                                  capsys):
    import shutil

    run, _ = _run_on_a_copy_of_its_data(run_dir, tmp_path)
    first = write_class_folders(tmp_path / "x1" / "images", 4, seed=5)
    second = write_class_folders(tmp_path / "x2" / "images", 5, seed=6)
    for folder, report in ((first, "evaluation-images"), (second, "evaluation-images-2"),
                           (first, "evaluation-images")):  # again: its own report
        results = evaluate.evaluate_run(run, {"data_dir": str(folder), "ways": 4})
        saved = json.load(open(os.path.join(run, report, "evaluation.json")))
        assert saved["data_dir"] == str(folder) == results["data_dir"]
    assert not os.path.exists(os.path.join(run, "evaluation-images-3"))
    one_class = tmp_path / "one"
    shutil.copytree(first / "person1", one_class / "person1")
    assert evaluate.main([f"--run_dir={run}", f"--data_dir={one_class}"]) == 2
    assert "needs at least 2 such classes" in capsys.readouterr().err


def test_evaluate_on_another_folder_of_other_sizes_leaves_the_run_results(tmp_path):
    # A run trained on the files' own size (image_size=None): another folder's images
    # are resized to it, and the report goes beside the run's own, not over it.
    data = write_class_folders(tmp_path / "data", 8, size=(20, 20))
    run = train.train(get_config(dataset="folder", data_dir=str(data), channels=1,
                                 image_size=None, architecture="digits", epochs=1,
                                 total_sample_size=100, batch_size=32, trials=20,
                                 out_dir=str(tmp_path / "runs")))
    before = open(os.path.join(run, "evaluation.json")).read()
    other = write_class_folders(tmp_path / "other", 4, size=(30, 26), seed=4)
    results = evaluate.evaluate_run(run, {"data_dir": str(other)})
    assert results["test_classes"] == [f"person{k}" for k in range(1, 5)]
    assert open(os.path.join(run, "evaluation.json")).read() == before
    assert os.path.exists(os.path.join(run, "evaluation-other", "evaluation.json"))


def test_evaluate_script_refuses_training_settings_and_missing_runs(run_dir, capsys):
    assert evaluate.main([f"--run_dir={run_dir}", "--epochs=3"]) == 2
    assert "cannot change after training" in capsys.readouterr().err
    for setting in ("--seed=7", "--test_fraction=0.5", "--split=pairs"):
        # these would draw another split and report training classes as unseen
        assert evaluate.main([f"--run_dir={run_dir}", setting]) == 2
        assert "cannot change after training" in capsys.readouterr().err
    assert evaluate.main(["--run_dir=/no/such/run"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert evaluate.main([]) == 2


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
    spread = predict.calibration.impostor_summary(embeddings, owners, matcher.head)
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

    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    test_people, newcomer = metrics["test_classes"], metrics["val_classes"][0]
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

    run, data = _run_on_a_copy_of_its_data(run_dir, tmp_path / "copy")
    person = json.load(open(os.path.join(run, "metrics.json")))["test_classes"][0]
    (data / person).rename(data / "renamed")
    assert demo.main([f"--run_dir={run}"]) == 2
    assert f"{person}: the run's people are no longer class folders" in \
        capsys.readouterr().err


@pytest.mark.parametrize("head", [None, (np.linspace(-1, 1, 8), 0.3)])
def test_vectorised_class_distances_equal_the_per_class_loop(head):
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 8)).astype(np.float32)
    owners = [f"c{k}" for k in rng.integers(0, 40, 300)]  # classes interleaved
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    per_class, names = predict.class_distances(queries, gallery, owners, head,
                                               chunk_bytes=4096)  # several chunks
    assert names == list(dict.fromkeys(owners))
    owners = np.asarray(owners)
    for query, row in zip(queries, per_class):
        distances = predict.metrics.dissimilarity(gallery, query, head)
        np.testing.assert_allclose(row, [distances[owners == n].min() for n in names],
                                   rtol=1e-6)


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
