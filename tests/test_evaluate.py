"""evaluate: scoring embeddings on a split (verification at a calibrated threshold,
N-way one-shot against pixels and chance), what train.py records at the end, and
evaluate.py on a small trained run: its own classes, another folder, and what it
refuses."""
import json
import os
import shutil

import numpy as np
import pytest

import keras
import evaluate
import metrics
import prepare_data
import train
from configurator import get_config
from conftest import PAIR_RECIPE, copy_run_with_its_data, write_class_folders
from siamese_network_funcs import build_network


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, 20 of each: a t-SNE of every test image stays quick."""
    full = prepare_data.load_digits()
    keep = np.concatenate([np.flatnonzero(full.labels == c)[:20] for c in range(10)])
    return prepare_data.ImageSet(full.images[keep], full.labels[keep], full.class_names,
                                 full.groups, [""] * len(keep), full.source_size)


def _clustered(imageset, spread):
    """Embeddings that place each class at its own corner, with noise of `spread`."""
    rng = np.random.default_rng(0)
    corners = np.eye(len(imageset.class_names)) * 3.0
    return corners[imageset.labels] + spread * rng.normal(
        size=(len(imageset.labels), len(imageset.class_names)))


def test_separated_classes_score_perfectly_and_noise_scores_near_chance(digits, tmp_path):
    config = get_config(dataset="digits", trials=200, total_sample_size=600)
    splits = prepare_data.build_splits(digits, config)
    clean = evaluate.evaluate(str(tmp_path), config, digits, splits,
                              _clustered(digits, 0.05), report_dir=str(tmp_path / "a"))
    assert clean["oneshot_accuracy"] == 1.0 and clean["test_pair_accuracy"] == 1.0
    assert clean["ways"] == 3 and clean["chance"] == pytest.approx(1 / 3)  # 3 test digits
    noise = np.random.default_rng(1).normal(size=(len(digits.labels), 10))
    random = evaluate.evaluate(str(tmp_path), config, digits, splits, noise,
                               report_dir=str(tmp_path / "b"))
    low, high = random["oneshot_accuracy_ci"]
    assert low <= 1 / 3 <= high  # chance lies inside the interval
    assert 0.4 <= random["test_pair_accuracy"] <= 0.6
    # The pixel baseline does not depend on the embeddings.
    assert random["pixel_nn_oneshot_accuracy"] == clean["pixel_nn_oneshot_accuracy"]
    with open(tmp_path / "a" / "evaluation.json") as handle:
        assert json.load(handle)["oneshot_accuracy"] == 1.0


def test_the_threshold_is_calibrated_on_validation_pairs_only(digits, tmp_path):
    config = get_config(dataset="digits", trials=50, total_sample_size=600)
    splits = prepare_data.build_splits(digits, config)
    embeddings = _clustered(digits, 0.3)
    results = evaluate.evaluate(str(tmp_path), config, digits, splits, embeddings)
    val_distances = metrics.EUCLIDEAN.pairs(embeddings, splits.val[0])
    expected = metrics.best_threshold(val_distances, splits.val[1])[0]
    assert results["threshold"] == pytest.approx(expected)
    assert results["threshold_source"] == "best accuracy on the validation pairs"


def test_training_report_records_the_fixed_rule_accuracy_of_every_part(digits, tmp_path):
    config = get_config(dataset="digits", trials=50, total_sample_size=600)
    splits = prepare_data.build_splits(digits, config)
    keras.utils.set_random_seed(0)
    model, base = build_network(config, digits.images.shape[1:])
    record = {"epochs_run": 0, "interrupted": False, "refit_epochs": 0,
              "refit_threshold": None, "train_seconds": 0.0}
    evaluate.training_report(str(tmp_path), config, config, digits, splits, model, base,
                             record)
    with open(tmp_path / "metrics.json") as handle:
        written = json.load(handle)
    embeddings = metrics.embed(base, digits.images)
    for part in ("train", "val", "test"):
        pairs, labels = getattr(splits, part)
        expected = metrics.pair_accuracy(metrics.EUCLIDEAN.pairs(embeddings, pairs),
                                         labels, config["margin"] / 2)
        assert written[f"{part}_pair_accuracy_fixed_threshold"] == pytest.approx(expected)
        assert written[f"n_{part}_pairs"] == len(labels)
    assert written["threshold"] == config["margin"] / 2
    assert os.path.isfile(tmp_path / "evaluation.json")


def test_training_report_refuses_a_network_that_outputs_nan(digits, tmp_path):
    config = get_config(dataset="digits")
    splits = prepare_data.build_splits(digits, config)
    model, base = build_network(config, digits.images.shape[1:])
    last = base.layers[-1]
    last.kernel.assign(np.full(last.kernel.shape, np.nan, np.float32))
    with pytest.raises(RuntimeError, match="Lower --learning_rate"):
        evaluate.training_report(str(tmp_path), config, config, digits, splits, model,
                                 base, {"refit_threshold": None})
    assert not os.path.exists(tmp_path / "metrics.json")


def test_validation_tasks_use_validation_classes_and_none_for_a_pairs_split(digits):
    config = get_config(dataset="digits", trials=30)
    splits = prepare_data.build_splits(digits, config)
    queries, candidates, _ = evaluate.validation_tasks(digits, splits, config)
    assert set(digits.labels[candidates.ravel()]) <= set(splits.class_split["val"])
    assert len(queries) == 30
    pairs_config = get_config(dataset="digits", split="pairs")
    assert evaluate.validation_tasks(
        digits, prepare_data.build_splits(digits, pairs_config), pairs_config) is None


def test_too_many_ways_for_the_test_classes_fails_naming_the_setting(digits):
    config = get_config(dataset="digits", ways=5)
    splits = prepare_data.build_splits(digits, config)
    with pytest.raises(ValueError, match="--ways=3 or fewer"):
        evaluate.oneshot_ways(digits, splits, config)


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


@pytest.mark.parametrize("change, named", [("add", "added: person13"),
                                           ("remove", "gone: person2")])
def test_evaluate_refuses_a_training_folder_whose_classes_changed(run_dir, tmp_path,
                                                                  capsys, change,
                                                                  named):
    # The split is drawn again from the folder: with a class more or less it would be
    # another split, and training people could be reported as never seen.
    run, data = copy_run_with_its_data(run_dir, tmp_path)
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
    run, _ = copy_run_with_its_data(run_dir, tmp_path)
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
                                 out_dir=str(tmp_path / "runs"), **PAIR_RECIPE))
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


@pytest.mark.parametrize("test_fraction, pairs", [(0.3, 300), (0.0, 250)])
def test_another_folder_is_all_test_pairs_even_for_a_run_without_a_test_part(
        digits, test_fraction, pairs):
    config = {"seed": 1337, "total_sample_size": 500, "test_fraction": test_fraction}
    splits = evaluate.unseen_splits(digits, config)
    assert len(splits.test[1]) == pairs and splits.test[1].sum() == pairs / 2
    assert len(splits.train[1]) == len(splits.val[1]) == 0
    assert len(splits.class_split["test"]) == 10
