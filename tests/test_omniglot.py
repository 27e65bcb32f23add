"""The Omniglot presets on the background set, the shipped mini set and the real
folders (those skipped when $SIAMESE_DATA_DIR/omniglot is absent): Koch's
alphabet-disjoint protocol, checked on the data rather than on a synthetic tree, and
the mini set's integrity."""
import hashlib
import os

import numpy as np
import pytest

import evaluate
import lake_runs
import prepare_data
import runs
import samplers
from configurator import get_config

# sha256 of the mini set's pixels, as datasets/build_omniglot_mini.py printed it.
MINI_PIXELS_SHA256 = "5f15da4d1aaf63dbd6537734fed7e9646bc0001d36126d53f207b7bfb1f66ba6"


@pytest.fixture(scope="module")
def mini():
    return prepare_data.load_omniglot_mini()


def test_mini_set_holds_the_background_set_at_28x28(mini):
    assert mini.images.shape == (19280, 28, 28, 1) and mini.images.dtype == np.uint8
    assert len(mini.class_names) == 964 and len(set(mini.groups)) == 30
    assert np.bincount(mini.labels).tolist() == [20] * 964
    assert mini.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert all(name.startswith(group + "/")
               for name, group in zip(mini.class_names, mini.groups))
    assert hashlib.sha256(mini.images.tobytes()).hexdigest() == MINI_PIXELS_SHA256


def test_mini_runs_are_lakes_twenty_runs():
    runs = lake_runs.read_runs(os.path.join(prepare_data.OMNIGLOT_MINI, "all_runs"))
    assert [run.name for run in runs] == [f"run{r:02d}" for r in range(1, 21)]
    assert all(len(run.gallery) == 20 and sorted(run.answers) == list(range(20))
               for run in runs)
    first = prepare_data.load_image(runs[0].gallery[0])
    assert first.shape == (28, 28, 1)


def test_mini_set_is_the_real_folders_preprocessed_at_28x28(mini, omniglot_dir):
    """A network trained on the mini set reads the original PNGs the same way."""
    with np.load(os.path.join(prepare_data.OMNIGLOT_MINI, "images_background.npz")) as saved:
        files = saved["files"]
    for i in np.random.default_rng(0).choice(len(mini.images), 40, replace=False):
        assert files[i].startswith(mini.class_names[mini.labels[i]] + "/")
        np.testing.assert_array_equal(prepare_data.load_image(
            os.path.join(omniglot_dir, files[i]), (28, 28)), mini.images[i])
    official = os.path.join(os.path.dirname(omniglot_dir), "one-shot-classification",
                            "all_runs", "run07", "test", "item13.png")
    shipped = os.path.join(prepare_data.OMNIGLOT_MINI, "all_runs", "run07", "test",
                           "item13.png")
    np.testing.assert_array_equal(prepare_data.load_image(official, (28, 28)),
                                  prepare_data.load_image(shipped))


@pytest.mark.parametrize("dataset, parts", [("omniglot", [25, 5, 0]),
                                            ("omniglot_mini", [19, 5, 6])])
def test_preset_splits_whole_alphabets_and_draws_tasks_within_one(request, dataset,
                                                                  parts):
    if dataset == "omniglot":
        config = get_config(dataset="omniglot",
                            data_dir=request.getfixturevalue("omniglot_dir"))
        imageset = prepare_data.load_dataset(config)
        assert imageset.images.shape == (19280, 52, 52, 1)  # 964 characters x 20
    else:
        config = get_config(dataset=dataset)
        imageset = request.getfixturevalue("mini")
    assert len(imageset.class_names) == 964 and len(set(imageset.groups)) == 30

    splits = prepare_data.build_splits(imageset, config)
    alphabets = {name: {imageset.groups[c] for c in class_ids}
                 for name, class_ids in splits.class_split.items()}
    assert [len(alphabets[name]) for name in ("train", "val", "test")] == parts
    assert not (alphabets["train"] & alphabets["val"] or alphabets["train"]
                & alphabets["test"] or alphabets["val"] & alphabets["test"])
    for class_ids in splits.class_split.values():  # every character of an alphabet
        for alphabet in {imageset.groups[c] for c in class_ids}:
            assert {c for c in class_ids if imageset.groups[c] == alphabet} == \
                {c for c, g in enumerate(imageset.groups) if g == alphabet}

    queries, candidates, answers = evaluate.validation_tasks(imageset, splits, config)
    assert candidates.shape == (config["trials"], 20)
    for query, row, answer in zip(queries, candidates, answers):
        classes = imageset.labels[row]
        assert len(set(classes)) == 20 and classes[answer] == imageset.labels[query]
        assert len({imageset.groups[c] for c in classes}) == 1
        assert imageset.groups[classes[0]] in alphabets["val"]

    labels, class_ids, _ = samplers.rotated_classes(
        imageset.labels, splits.class_split["train"], imageset.groups)
    assert len(class_ids) == 4 * len(splits.class_split["train"])
    assert np.isin(labels[np.isin(labels, class_ids)] % 964,
                   splits.class_split["train"]).all()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`python train.py` as a newcomer runs it, shortened to 2 epochs."""
    import train
    out_dir = tmp_path_factory.mktemp("runs")
    return train.train(get_config(epochs=2, out_dir=str(out_dir)))


def test_default_run_beats_pixels_on_unseen_alphabets_and_lakes_runs(default_run):
    results = runs.read_json(os.path.join(default_run, "evaluation.json"))
    lake = runs.read_json(os.path.join(default_run, "lake_runs.json"))
    assert results["ways"] == 20 and results["within_group"]
    assert results["oneshot_accuracy"] > results["pixel_nn_oneshot_accuracy"] + 0.25
    assert results["oneshot_accuracy_ci"][0] < results["oneshot_accuracy"] < \
        results["oneshot_accuracy_ci"][1]
    assert lake["runs"] == 20 and lake["queries"] == 400 and lake["chance"] == 0.05
    assert lake["accuracy"] > lake["pixel_nn_accuracy"] + 0.25
    assert os.path.isfile(os.path.join(default_run, "lake_runs.png"))


def test_lake_benchmark_command_repeats_the_training_report(default_run, tmp_path,
                                                            capsys):
    runs_dir = os.path.join(prepare_data.OMNIGLOT_MINI, "all_runs")
    assert evaluate.main([f"--run_dir={default_run}", f"--lake_runs={runs_dir}",
                          f"--report_dir={tmp_path}"]) == 0
    again = runs.read_json(os.path.join(tmp_path, "lake_runs.json"))
    assert again == runs.read_json(os.path.join(default_run, "lake_runs.json"))
    assert "Lake et al.'s 20 one-shot runs" in capsys.readouterr().out


def test_mini_network_scores_the_official_runs_as_the_shipped_ones(default_run,
                                                                   omniglot_dir, tmp_path):
    """The shipped runs are the official ones preprocessed as the network reads them."""
    official = os.path.join(os.path.dirname(omniglot_dir), "one-shot-classification",
                            "all_runs")
    results = evaluate.lake_benchmark(default_run, official, str(tmp_path))
    shipped = runs.read_json(os.path.join(default_run, "lake_runs.json"))
    assert results["per_run"] == shipped["per_run"]
