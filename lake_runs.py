"""Lake et al.'s official Omniglot benchmark: 20 runs of 20-way within-alphabet one-shot
classification, scored through the identify path that predict.py uses.

Each run holds one drawing of each of 20 characters of one evaluation alphabet
(training/class01..20.png, the gallery) and another drawing of each by another person
(test/item01..20.png, the queries); class_labels.txt names each query's character:
`runNN/test/itemMM.png runNN/training/classKK.png`, paths relative to the all_runs folder.
A query counts as right when the nearest gallery drawing is its character.

    python evaluate.py --run_dir=RUN --lake_runs=PATH/TO/all_runs

Download: https://github.com/brendenlake/omniglot (python/one-shot-classification/
all_runs.zip, MIT licence).
"""
import os
import re
from dataclasses import dataclass

import numpy as np

import metrics
import plots
import runs

# Published mean top-1 accuracy on these 20 runs.
REFERENCES = (
    ("Koch et al. 2015 (Siamese network)", 0.920),
    ("people (Lake et al. 2015)", 0.955),
    ("Bayesian Program Learning (Lake et al. 2015)", 0.967),
)
LAYOUT = ("Lake's all_runs layout: run01 ... run20, each with training/class01..20.png, "
          "test/item01..20.png and class_labels.txt; download all_runs.zip from "
          "https://github.com/brendenlake/omniglot (python/one-shot-classification)")
RUN_NAME = re.compile(r"run\d+$")


@dataclass
class LakeRun:
    name: str  # "run01"
    gallery: list  # the one-shot drawings (paths), one per character, sorted
    queries: list  # the test drawings (paths), sorted
    answers: np.ndarray  # per query: the index of its character's drawing in gallery


def read_runs(all_runs_dir):
    """The runs of an all_runs folder, every file they name checked to exist; raises
    ValueError or FileNotFoundError with one line naming the problem and the fix."""
    if not os.path.isdir(all_runs_dir):
        what = "is a file" if os.path.isfile(all_runs_dir) else "does not exist"
        raise FileNotFoundError(f"lake_runs {all_runs_dir!r} {what}: pass "
                                f"--lake_runs=PATH to the all_runs folder ({LAYOUT})")
    names = sorted(n for n in os.listdir(all_runs_dir) if RUN_NAME.match(n)
                   and os.path.isdir(os.path.join(all_runs_dir, n)))
    if not names:
        raise ValueError(f"{all_runs_dir!r} holds no run folders (run01, run02, ...): "
                         f"it is not in {LAYOUT}")
    return [_read_run(all_runs_dir, name) for name in names]


def _read_run(all_runs_dir, name):
    labels_file = os.path.join(all_runs_dir, name, "class_labels.txt")
    if not os.path.isfile(labels_file):
        raise FileNotFoundError(f"{labels_file} is missing: every run folder needs its "
                                f"class_labels.txt ({LAYOUT})")
    pairs = []
    with open(labels_file, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{labels_file} line {number} is {line.strip()!r}: "
                                 f"expected two paths, 'runNN/test/itemMM.png "
                                 f"runNN/training/classKK.png'")
            for field in fields:
                if not os.path.isfile(os.path.join(all_runs_dir, field)):
                    raise FileNotFoundError(
                        f"{labels_file} line {number} names {field}, which is not in "
                        f"{all_runs_dir!r}: restore the file, or unpack all_runs.zip "
                        f"again")
            pairs.append(fields)
    if not pairs:
        raise ValueError(f"{labels_file} is empty: expected one line per test drawing")
    queries = sorted({query for query, _ in pairs})
    if len(queries) != len(pairs):
        raise ValueError(f"{labels_file} names a test drawing twice: each query has "
                         f"one answer")
    gallery = sorted({shot for _, shot in pairs})
    if len(gallery) < 2:
        raise ValueError(f"{labels_file} names {len(gallery)} training drawing: a "
                         f"one-shot task needs at least 2 to choose from")
    answer_of = dict(pairs)
    path = lambda relative: os.path.join(all_runs_dir, relative)  # noqa: E731
    return LakeRun(name, [path(g) for g in gallery], [path(q) for q in queries],
                   np.array([gallery.index(answer_of[q]) for q in queries]))


def score_runs(matcher, lake_runs):
    """Top-1 accuracy per run of `matcher` (a predict.Matcher) and of nearest
    neighbour on the same preprocessed pixels: {"model": [...], "pixel_nn": [...],
    "picks": [[gallery index per query] per run]}."""
    scores = {"model": [], "pixel_nn": [], "picks": []}
    for run in lake_runs:
        try:
            gallery_images = [matcher.load(p) for p in run.gallery]
            query_images = [matcher.load(p) for p in run.queries]
        except ValueError as error:
            raise ValueError(f"{run.name}: {error}") from None
        owners = [str(i) for i in range(len(run.gallery))]  # one class per drawing
        ranked = matcher.rank(matcher.embed(query_images),
                              matcher.embed(gallery_images), owners, top_k=1)
        picks = np.array([int(r["top"][0][0]) for r in ranked])
        pixel_picks = np.argmin(metrics.EUCLIDEAN(
            _flat(gallery_images)[None, :, :], _flat(query_images)[:, None, :]), axis=1)
        scores["model"].append(float(np.mean(picks == run.answers)))
        scores["pixel_nn"].append(float(np.mean(pixel_picks == run.answers)))
        scores["picks"].append(picks.tolist())
    return scores


def _flat(images):
    return np.stack(images).reshape(len(images), -1).astype(np.float32)


def benchmark(matcher, all_runs_dir, report_dir):
    """Score Lake's runs, print the report, write lake_runs.json and lake_runs.png (the
    run with the most mistakes) into `report_dir`; returns the results dict."""
    lake_runs = read_runs(all_runs_dir)
    scores = score_runs(matcher, lake_runs)
    n_queries = sum(len(run.queries) for run in lake_runs)
    ways = len(lake_runs[0].gallery)
    weights = np.array([len(run.queries) for run in lake_runs]) / n_queries
    model = float(np.dot(weights, scores["model"]))
    pixel = float(np.dot(weights, scores["pixel_nn"]))
    results = {
        "lake_runs": os.path.abspath(all_runs_dir), "runs": len(lake_runs),
        "queries": n_queries, "ways": ways,
        "accuracy": model, "accuracy_ci": metrics.wilson_interval(model, n_queries),
        "pixel_nn_accuracy": pixel,
        "pixel_nn_accuracy_ci": metrics.wilson_interval(pixel, n_queries),
        "chance": 1.0 / ways,
        "per_run": {run.name: acc for run, acc in zip(lake_runs, scores["model"])},
        "pixel_nn_per_run": {run.name: acc
                             for run, acc in zip(lake_runs, scores["pixel_nn"])},
        "published": {name: value for name, value in REFERENCES},
    }
    os.makedirs(report_dir, exist_ok=True)
    worst = int(np.argmin(scores["model"]))
    run = lake_runs[worst]
    plots.plot_lake_run(run.name, [matcher.load(p) for p in run.gallery],
                        [matcher.load(p) for p in run.queries], run.answers,
                        np.array(scores["picks"][worst]),
                        os.path.join(report_dir, "lake_runs.png"))
    runs.write_json(os.path.join(report_dir, "lake_runs.json"), results)
    print_report(results)
    return results


def print_report(results):
    print(f"Lake et al.'s {results['runs']} one-shot runs ({results['ways']}-way "
          f"within-alphabet, {results['queries']} queries, alphabets never seen in "
          f"training):")
    accuracy = metrics.with_interval(results["accuracy"], results["queries"])
    print(f"  model top-1 {accuracy} | pixel nearest neighbour "
          f"{results['pixel_nn_accuracy']:.4f} | chance {results['chance']:.4f}")
    print("  published: " + "; ".join(f"{name} {value:.3f}"
                                     for name, value in results["published"].items()))
    print("  per run: " + " ".join(f"{name[3:]}:{acc:.2f}"
                                   for name, acc in results["per_run"].items()))
