"""lake_runs: reading Lake et al.'s all_runs layout, scoring it through predict.Matcher's
ranking, and the one-line errors for folders that are not in that layout."""
import os

import numpy as np
import pytest
from PIL import Image

import evaluate
import lake_runs
import metrics
import predict


def drawing(k, size=12):
    """Character k: a dark block at its own place on white, as Omniglot draws."""
    image = np.full((size, size), 255, np.uint8)
    row, column = divmod(k, 3)
    image[row * 4:row * 4 + 3, column * 4:column * 4 + 3] = 0
    return image


def write_lake_runs(root, n_runs=2, ways=4, seed=0):
    """An all_runs tree in Lake's layout; each run's queries name their characters in
    a shuffled order, as the official class_labels.txt do. Returns {run: answers}."""
    rng = np.random.default_rng(seed)
    answers = {}
    for r in range(1, n_runs + 1):
        run = f"run{r:02d}"
        for part in ("training", "test"):
            (root / run / part).mkdir(parents=True)
        characters = rng.permutation(ways)  # query i shows character characters[i]
        lines = []
        for k in range(ways):
            Image.fromarray(drawing(k)).save(root / run / "training" / f"class{k + 1:02d}.png")
        for i, k in enumerate(characters):
            noisy = drawing(k)
            noisy[-1, i % 12] = 0  # another drawer: not the same pixels
            Image.fromarray(noisy).save(root / run / "test" / f"item{i + 1:02d}.png")
            lines.append(f"{run}/test/item{i + 1:02d}.png {run}/training/class{k + 1:02d}.png")
        (root / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        answers[run] = characters
    return answers


class PixelMatcher(predict.Matcher):
    """predict.Matcher's loading and ranking with the raw pixels as the embedding."""

    def __init__(self):  # no trained run: pixels are the embedding
        self.config = {"image_size": (12, 12), "downsample": 1, "channels": 1}
        self.scorer, self.threshold = metrics.EUCLIDEAN, float("inf")

    def embed(self, images):
        return np.stack(images).reshape(len(images), -1).astype(np.float32)


def test_read_runs_pairs_each_query_with_its_character(tmp_path):
    answers = write_lake_runs(tmp_path, n_runs=3, ways=4)
    runs = lake_runs.read_runs(str(tmp_path))
    assert [run.name for run in runs] == ["run01", "run02", "run03"]
    for run in runs:
        assert [os.path.basename(p) for p in run.gallery] == [
            f"class{k:02d}.png" for k in range(1, 5)]
        assert [os.path.basename(p) for p in run.queries] == [
            f"item{i:02d}.png" for i in range(1, 5)]
        np.testing.assert_array_equal(run.answers, answers[run.name])


def test_score_runs_counts_right_and_wrong_picks_per_run(tmp_path):
    write_lake_runs(tmp_path, n_runs=2, ways=4)
    labels = tmp_path / "run02" / "class_labels.txt"
    lines = labels.read_text().splitlines()
    query, shot = lines[0].split()
    other = next(s for s in (l.split()[1] for l in lines) if s != shot)
    labels.write_text("\n".join([f"{query} {other}"] + lines[1:]) + "\n")  # one wrong key
    scores = lake_runs.score_runs(PixelMatcher(), lake_runs.read_runs(str(tmp_path)))
    assert scores["model"] == [1.0, 0.75]
    assert scores["pixel_nn"] == scores["model"]  # the embedding is the pixels here


def test_benchmark_reports_the_mean_its_interval_and_the_references(tmp_path, capsys):
    write_lake_runs(tmp_path / "all_runs", n_runs=2, ways=4)
    results = lake_runs.benchmark(PixelMatcher(), str(tmp_path / "all_runs"),
                                  str(tmp_path / "report"))
    assert results["accuracy"] == 1.0 and results["queries"] == 8
    assert results["chance"] == 0.25 and results["ways"] == 4
    low, high = results["accuracy_ci"]
    assert low < 1.0 == high
    assert results["published"]["Koch et al. 2015 (Siamese network)"] == 0.920
    assert os.path.isfile(tmp_path / "report" / "lake_runs.png")
    assert os.path.isfile(tmp_path / "report" / "lake_runs.json")
    printed = capsys.readouterr().out
    assert "chance 0.2500" in printed and "0.967" in printed


def break_layout(root, problem):
    if problem == "no runs":
        for run in ("run01", "run02"):
            os.rename(root / run, root / f"trial{run[3:]}")
    elif problem == "no labels":
        os.remove(root / "run02" / "class_labels.txt")
    elif problem == "missing file":
        os.remove(root / "run01" / "test" / "item03.png")
    elif problem == "bad line":
        with open(root / "run01" / "class_labels.txt", "a") as handle:
            handle.write("run01/test/item01.png\n")
    elif problem == "not a folder":
        return str(root / "nowhere")
    return str(root)


@pytest.mark.parametrize("problem, message", [
    ("not a folder", "does not exist: pass --lake_runs=PATH to the all_runs folder"),
    ("no runs", "holds no run folders (run01, run02, ...): it is not in Lake's "),
    ("no labels", "class_labels.txt is missing: every run folder needs its"),
    ("missing file", "line 3 names run01/test/item03.png, which is not in"),
    ("bad line", "expected two paths"),
])
def test_a_folder_not_in_lakes_layout_gets_one_line_naming_it(tmp_path, problem,
                                                              message):
    write_lake_runs(tmp_path, n_runs=2, ways=4)
    folder = break_layout(tmp_path, problem)
    with pytest.raises((ValueError, OSError)) as error:
        lake_runs.read_runs(folder)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_drawing_is_named_with_its_run(tmp_path):
    write_lake_runs(tmp_path, n_runs=2, ways=4)
    (tmp_path / "run02" / "training" / "class03.png").write_bytes(b"not a png")
    with pytest.raises(ValueError) as error:
        lake_runs.score_runs(PixelMatcher(), lake_runs.read_runs(str(tmp_path)))
    assert str(error.value).startswith("run02: cannot read image")
    assert "class03.png" in str(error.value)


def test_evaluate_script_gives_one_line_for_a_wrong_folder_and_extra_settings(
        tmp_path, capsys):
    assert evaluate.main([f"--run_dir={tmp_path}", "--lake_runs=x",
                          "--ways=5"]) == 2
    assert "--lake_runs scores Lake's runs alone" in capsys.readouterr().err


def test_official_runs_are_read_whole(shared_data_dir):
    folder = os.path.join(shared_data_dir, "omniglot", "one-shot-classification",
                          "all_runs")
    if not os.path.isdir(folder):
        pytest.skip(f"Lake's all_runs not found at {folder}")
    runs = lake_runs.read_runs(folder)
    assert len(runs) == 20
    assert all(len(run.gallery) == 20 and len(run.queries) == 20 for run in runs)
    assert all(sorted(run.answers) == list(range(20)) for run in runs)
