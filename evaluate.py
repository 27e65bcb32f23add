"""Evaluate a trained run: verification with a calibrated threshold, and N-way one-shot
accuracy on classes the network never saw, beside chance and raw-pixel baselines.

    python evaluate.py --run_dir=runs/att_faces-20261125-101500
    python evaluate.py --run_dir=RUN --ways=10 --trials=1000
    python evaluate.py --run_dir=RUN --data_dir=OTHER   # every class of OTHER is unseen
    python evaluate.py --run_dir=RUN --lake_runs=PATH/TO/all_runs  # Lake et al.'s 20 runs

Writes evaluation.json and roc.png, distance_hist.png, oneshot_curve.png,
oneshot_examples.png and embeddings.png into the run folder, or with --data_dir=OTHER
into RUN/evaluation-<OTHER's name>/, so the run's own results stay (or --report_dir).
With --lake_runs it scores Lake et al.'s official one-shot runs alone and writes
lake_runs.json and lake_runs.png.
"""
import itertools
import os
import sys
import warnings

import numpy as np

import calibration
import distribute
import lake_runs
import losses
import metrics
import plots
import prepare_data
import runs
import samplers
import siamese_network_funcs
from configurator import help_text, parse_args, resolve, wants_help

# Settings that change what is evaluated, not what was trained. The seed, split and
# fractions are not among them: on the run's own data they would draw another split and
# report training classes as unseen.
EVALUATION_KEYS = ("data_dir", "ways", "trials", "within_group", "strict", "lake_runs")


def default_ways(n_classes):
    """Koch's 20-way where there are 20 classes to draw from, else all of them."""
    return min(20, n_classes)


def oneshot(embeddings, imageset, class_ids, ways, trials, seed, within_group,
            scorer=metrics.EUCLIDEAN):
    """N-way one-shot accuracy of the model and of pixel nearest neighbour (on the
    tasks' images alone, flattened), on the same tasks."""
    rng = np.random.default_rng(seed)
    groups = imageset.groups if within_group else None
    tasks = samplers.make_oneshot_trials(imageset.labels, class_ids, ways, trials, rng,
                                        groups)
    rows, local_tasks = metrics.task_rows(tasks)
    pixels = imageset.images[rows].reshape(len(rows), -1).astype(np.float32)
    return (metrics.oneshot_accuracy(embeddings, *tasks, scorer),
            metrics.oneshot_accuracy(pixels, *local_tasks), tasks)


def oneshot_ways(imageset, splits, config):
    """The N of the test classes' one-shot tasks (None without test classes); raises,
    naming --ways, when the test classes cannot make such tasks (train.py asks before
    training, not after)."""
    test_classes = splits.class_split["test"]
    if not len(test_classes):
        return None  # test_fraction=0: the test is another folder
    ways = config["ways"] or default_ways(len(test_classes))
    groups = imageset.groups if config["within_group"] else None
    samplers.make_oneshot_trials(imageset.labels, test_classes, ways, 1,
                                np.random.default_rng(0), groups)
    return ways


def validation_tasks(imageset, splits, config):
    """Fixed N-way one-shot tasks (queries, candidates, answers) on the validation
    classes, for choosing epochs and settings without touching the test classes; None
    when the split has no validation classes of its own."""
    val_classes = splits.class_split["val"]
    if config["split"] == "pairs" or len(val_classes) < 2:
        return None
    ways = min(config["ways"] or default_ways(len(val_classes)), len(val_classes))
    groups = imageset.groups if config["within_group"] else None
    if groups is not None:
        largest = int(np.unique([groups[c] for c in val_classes],
                                return_counts=True)[1].max())
        groups, ways = (groups, min(ways, largest)) if largest >= 2 else (None, ways)
    rng = np.random.default_rng(config["seed"])
    return samplers.make_oneshot_trials(imageset.labels, val_classes, ways,
                                       config["trials"], rng, groups)


UNSEEN_TEST_SHARE = 0.25  # configs.test_fraction's default


def unseen_splits(imageset, config):
    """Every class of `imageset` as unseen test classes (evaluating on another folder):
    balanced test pairs among them, no training or validation pairs."""
    if len(imageset.class_names) < 2:
        raise ValueError(f"{config['data_dir']!r} holds {len(imageset.class_names)} "
                         f"class folder with 2 or more images: evaluating on it needs "
                         f"at least 2 such classes (impostor pairs, one-shot tasks)")
    rng = np.random.default_rng(config["seed"])
    everyone = np.arange(len(imageset.class_names))
    # As many test pairs as the run's own test part had; a run that held no test part
    # back (test_fraction=0) gets configs.py's default share.
    share = config["test_fraction"] or UNSEEN_TEST_SHARE
    n = max(1, int(round(config["total_sample_size"] * share)))
    return prepare_data.PairSplits(
        prepare_data.no_pairs(), prepare_data.no_pairs(),
        prepare_data.make_pairs(imageset.labels, everyone, n, n, rng),
        {"train": everyone[:0], "val": everyone[:0], "test": everyone})


def evaluate(run_dir, config, imageset, splits, embeddings, threshold=None,
             report_dir=None, scorer=metrics.EUCLIDEAN, reference=None):
    """Score `embeddings` (of every image in `imageset`) on `splits` and write
    evaluation.json and the plots.

    The verification threshold is the one with the best accuracy on the validation
    pairs; with no validation pairs (another folder) the run's calibrated `threshold`
    is used. A split without test classes (test_fraction=0: the test is another
    folder, or Lake's runs) reports the calibration and validation alone. With
    `reference` (the run's validation spread, calibration.impostor_summary),
    `imageset` is another folder: the report adds what a threshold re-calibrated on
    half its classes gives on the other half, and whether its distances drift.
    Returns the results dict.
    """
    report_dir = report_dir or run_dir
    os.makedirs(report_dir, exist_ok=True)
    results = {"split": config["split"], "data_dir": config["data_dir"],
               "fixed_threshold": losses.fixed_threshold(config),
               "fixed_rule": losses.fixed_rule(config)}
    if len(splits.val[1]):
        val_d = scorer.pairs(embeddings, splits.val[0])
        threshold, val_accuracy = metrics.best_threshold(val_d, splits.val[1])
        results["val_pair_accuracy"] = val_accuracy
        results["eer_threshold"] = metrics.roc(val_d, splits.val[1])[5]
        results["threshold_source"] = "best accuracy on the validation pairs"
        # What the threshold knows, for predict.py's drift warning.
        val_images = np.isin(imageset.labels, splits.class_split["val"])
        results["impostor_distances"] = calibration.impostor_summary(
            embeddings[val_images], imageset.labels[val_images], scorer)
    elif config["refit"]:
        results["threshold_source"] = ("best accuracy on the validation pairs, before "
                                       "the refit trained on them")
    else:
        results["threshold_source"] = "the trained run's calibrated threshold"
    results["threshold"] = threshold
    test_classes = splits.class_split["test"]
    results["test_classes"] = [imageset.class_names[c] for c in test_classes]
    if len(test_classes):
        results.update(verification(config, embeddings, splits, threshold, scorer,
                                    report_dir))
        if reference is not None:
            results.update(recalibration(config, imageset, embeddings, threshold, scorer,
                                         reference))
        results.update(test_oneshot(config, imageset, splits, embeddings, scorer,
                                    report_dir))
    val_tasks = validation_tasks(imageset, splits, config)
    if val_tasks:
        # For choosing settings without looking at the test classes.
        results["val_oneshot_accuracy"] = metrics.oneshot_accuracy(embeddings, *val_tasks,
                                                                   scorer)
        results["val_ways"] = val_tasks[1].shape[1]
        results["val_trials"] = len(val_tasks[0])
    runs.write_json(os.path.join(report_dir, "evaluation.json"), results)
    print_report(results)
    return results


def calibrated_threshold(base, model, imageset, splits):
    """The verification threshold with the best accuracy on the validation pairs (for
    a refit: calibrated while those pairs are still unseen)."""
    scorer = siamese_network_funcs.pair_scorer(model)
    distances = scorer.pairs(metrics.embed(base, imageset.images), splits.val[0])
    return metrics.best_threshold(distances, splits.val[1])[0]


def training_report(run_dir, config, saved_config, imageset, splits, model, base,
                    record):
    """What train.py writes at the end: metrics.json (`record` of the training, and
    pair accuracy of every part at the write-ups' fixed rule), then the evaluation
    (evaluate), at record["refit_threshold"] for a refit run. Written by the chief of
    a cluster alone."""
    embeddings = metrics.embed(base, imageset.images)
    if not distribute.is_chief(config):
        return  # the other workers of a cluster only embed their share for the chief
    if not np.all(np.isfinite(embeddings)):
        raise RuntimeError(
            f"training diverged: the network kept in {run_dir} outputs NaN or infinite "
            f"values, so it cannot be evaluated or used. Lower --learning_rate (now "
            f"{config['learning_rate']:g}) and train again")
    scorer = siamese_network_funcs.pair_scorer(model)
    threshold = losses.fixed_threshold(config)
    results = {"split": config["split"], "threshold": threshold, **record}
    classes = prepare_data.class_names_by_part(imageset, splits)
    for name in ("train", "val", "test"):
        pairs, labels = getattr(splits, name)
        results[f"n_{name}_pairs"] = int(len(labels))
        results[f"{name}_classes"] = classes[name]
        if len(labels):  # none for validation after a refit
            results[f"{name}_pair_accuracy_fixed_threshold"] = metrics.pair_accuracy(
                scorer.pairs(embeddings, pairs), labels, threshold)
    runs.write_json(os.path.join(run_dir, "metrics.json"), results)
    # For the losses that never trained toward the rule, the evaluation below reports
    # it with that caveat, beside the calibrated threshold.
    if "test_pair_accuracy_fixed_threshold" in results and losses.fixed_rule_applies(
            config):
        print(f"test pair accuracy at the write-ups' fixed {losses.fixed_rule(config)}: "
              f"{results['test_pair_accuracy_fixed_threshold']:.4f} "
              f"({results['n_test_pairs']} pairs)")
    evaluate(run_dir, saved_config, imageset, splits, embeddings,
             threshold=record["refit_threshold"], scorer=scorer)


def verification(config, embeddings, splits, threshold, scorer, report_dir):
    """Accuracy on the test pairs at `threshold` and at the fixed rule, the ROC, and
    their plots."""
    test_pairs, test_labels = splits.test
    test_d = scorer.pairs(embeddings, test_pairs)
    fixed = losses.fixed_threshold(config)
    fpr, tpr, _, auc, eer, _ = metrics.roc(test_d, test_labels)
    results = dict(
        n_test_pairs=int(len(test_labels)),
        test_pair_accuracy=metrics.pair_accuracy(test_d, test_labels, threshold),
        test_pair_accuracy_fixed_threshold=metrics.pair_accuracy(test_d, test_labels,
                                                                 fixed),
        roc_auc=auc, eer=eer)
    if config["split"] == "pairs":
        # One pool of pairs for all three parts: say how many test pairs training saw,
        # and score the others on their own.
        seen = prepare_data.pairs_also_in(test_pairs, splits.train[0])
        fresh = ~seen
        results.update(
            test_pairs_also_in_training=int(seen.sum()),
            test_genuine_pairs_also_in_training=int(np.sum(seen & (test_labels == 1))),
            n_test_genuine_pairs=int(np.sum(test_labels == 1)),
            n_test_pairs_not_in_training=int(fresh.sum()),
            n_test_genuine_pairs_not_in_training=int(np.sum(fresh & (test_labels == 1))),
            test_pair_accuracy_not_in_training=metrics.pair_accuracy(
                test_d[fresh], test_labels[fresh], threshold) if fresh.any() else None)
    plots.plot_roc(fpr, tpr, auc, eer, os.path.join(report_dir, "roc.png"))
    plots.plot_distance_hist(test_d, test_labels, threshold,
                             os.path.join(report_dir, "distance_hist.png"))
    return results


def recalibration(config, imageset, embeddings, threshold, scorer, reference):
    """On another folder: accuracy at a threshold calibrated on half its classes and
    at the run's `threshold`, both scored on the other half; and the median distance
    between its classes when it lies outside the run's `reference` range."""
    results = {"drift_median": calibration.drift(embeddings, imageset.labels, reference,
                                                 scorer),
               "reference": reference}
    try:
        results["recalibrated"] = calibration.calibrate(
            embeddings, imageset.labels, scorer, seed=config["seed"], compare=threshold)
    except ValueError as error:
        results["recalibrated"] = None
        results["recalibration_refused"] = str(error)
    return results


def test_oneshot(config, imageset, splits, embeddings, scorer, report_dir):
    """N-way one-shot on the test classes, of the model and of pixel nearest
    neighbour, the accuracy against N, and their plots."""
    test_classes = splits.class_split["test"]
    ways = oneshot_ways(imageset, splits, config)
    model_acc, pixel_acc, tasks = oneshot(embeddings, imageset, test_classes,
                                          ways, config["trials"], config["seed"],
                                          config["within_group"], scorer)
    results = dict(oneshot_accuracy=model_acc, pixel_nn_oneshot_accuracy=pixel_acc,
                   chance=1.0 / ways, ways=ways, trials=config["trials"],
                   within_group=config["within_group"],
                   oneshot_accuracy_ci=metrics.wilson_interval(model_acc,
                                                               config["trials"]),
                   pixel_nn_oneshot_accuracy_ci=metrics.wilson_interval(
                       pixel_acc, config["trials"]))
    curve = {"ways": [], "model": [], "pixel_nn": []}
    for n in sorted(set(np.linspace(2, ways, num=min(ways - 1, 10)).astype(int))):
        model_n, pixel_n, _ = oneshot(embeddings, imageset, test_classes, n,
                                      config["trials"], config["seed"],
                                      config["within_group"], scorer)
        curve["ways"].append(int(n))
        curve["model"].append(model_n)
        curve["pixel_nn"].append(pixel_n)
    results["oneshot_curve"] = curve
    plots.plot_oneshot_curve(curve, os.path.join(report_dir, "oneshot_curve.png"))
    plots.plot_oneshot_examples(imageset, embeddings, tasks,
                                os.path.join(report_dir, "oneshot_examples.png"),
                                scorer=scorer)
    test_images = np.isin(imageset.labels, test_classes)
    plots.plot_embeddings(embeddings[test_images], imageset.labels[test_images],
                          imageset.class_names, os.path.join(report_dir, "embeddings.png"))
    return results


def print_report(results):
    if results["test_classes"]:
        print_test_report(results)
    else:
        print(f"no test classes here (test_fraction=0); threshold "
              f"{results['threshold']:.4f} ({results['threshold_source']}). Score "
              f"classes never seen in training with python evaluate.py --run_dir=RUN "
              f"--lake_runs=DIR (Lake et al.'s 20 one-shot runs) or --data_dir=FOLDER")
    if "val_oneshot_accuracy" in results:
        accuracy = metrics.with_interval(results["val_oneshot_accuracy"],
                                         results["val_trials"])
        print(f"  (validation classes, for choosing settings: {results['val_ways']}-way "
              f"one-shot {accuracy})")


def print_test_report(results):
    unseen = ("classes never seen in training" if results["split"] != "pairs"
              else "classes also used in training (split=pairs)")
    print(f"evaluation on {len(results['test_classes'])} {unseen}:")
    print(f"  verification: {results['test_pair_accuracy']:.4f} accuracy on "
          f"{results['n_test_pairs']} test pairs at threshold {results['threshold']:.4f} "
          f"({results['threshold_source']}); "
          f"{results['test_pair_accuracy_fixed_threshold']:.4f} at the fixed "
          f"{results['fixed_rule']}; ROC AUC {results['roc_auc']:.4f}, "
          f"EER {results['eer']:.4f}")
    if results.get("test_pair_accuracy_not_in_training") is not None:
        print(f"    {results['test_pairs_also_in_training']} of these test pairs "
              f"({results['test_genuine_pairs_also_in_training']} of the "
              f"{results['n_test_genuine_pairs']} genuine) are also training pairs; on "
              f"the other {results['n_test_pairs_not_in_training']} "
              f"({results['n_test_genuine_pairs_not_in_training']} genuine): "
              f"{results['test_pair_accuracy_not_in_training']:.4f}")
    recalibrated = results.get("recalibrated")
    if recalibrated:
        at_run = recalibrated["expected_at_compared"]["accuracy"]
        print(f"  re-calibrated on {recalibrated['calibration_classes']} of these classes "
              f"and scored on the other {recalibrated['check_classes']}: verification "
              f"{recalibrated['expected']['accuracy']:.4f} at threshold "
              f"{recalibrated['threshold']:.4f}, against {at_run:.4f} at the run's "
              f"{results['threshold']:.4f} and {recalibrated['check_best_accuracy']:.4f} "
              f"at the best threshold for those pairs (python predict.py calibrate RUN "
              f"--gallery=DIR sets such a threshold)")
    elif "recalibration_refused" in results:
        print(f"  not re-calibrated: {results['recalibration_refused']}")
    if results.get("drift_median") is not None:
        warnings.warn(calibration.drift_message(
            results["drift_median"], results["reference"], results["threshold"],
            "the run's validation classes",
            "python predict.py calibrate RUN --gallery=DIR sets it on your classes"))
    group = ", candidates within one group" if results["within_group"] else ""
    print(f"  {results['ways']}-way one-shot{group}: model "
          f"{metrics.with_interval(results['oneshot_accuracy'], results['trials'])} | "
          f"pixel nearest neighbour {results['pixel_nn_oneshot_accuracy']:.4f} | chance "
          f"{results['chance']:.4f}")


def same_folder(a, b):
    """Whether two data_dir settings name one folder, however spelled (relative,
    trailing slash, symlink); "" (a built-in dataset) only matches itself."""
    return a == b or bool(a and b) and os.path.realpath(a) == os.path.realpath(b)


def other_report_dir(run_dir, data_dir):
    """RUN/evaluation-<data_dir's name> for the report on another folder, or -2, -3,
    ... where that name holds the report of another folder of the same name (x/images
    and y/images), so one folder's report never replaces another's."""
    stem = os.path.join(run_dir, "evaluation-" + os.path.basename(os.path.normpath(
        data_dir)))
    for n in itertools.count(1):
        path = stem if n == 1 else f"{stem}-{n}"
        earlier = runs.read_json(os.path.join(path, "evaluation.json"), default={})
        if not os.path.exists(path) or same_folder(earlier.get("data_dir", ""), data_dir):
            return path


def trained_classes_within(imageset, train_dir, trained):
    """The classes a run trained or validated on (`trained`: runs.trained_classes)
    whose images `imageset`, from another folder, holds: as a sub-folder of the
    training folder `train_dir`, or through links into it."""
    root = os.path.realpath(train_dir)
    seen = set(trained["train"]) | set(trained["val"])
    found = set()
    for path in imageset.paths:
        inside = os.path.relpath(os.path.dirname(os.path.realpath(path)), root)
        name = inside.replace(os.sep, "/")
        if not inside.startswith(os.pardir) and name in seen:
            found.add(name)
    return sorted(found)


def evaluate_run(run_dir, overrides, report_dir=None):
    """Reload a run folder and evaluate it, optionally on another data_dir."""
    saved = runs.read_config(run_dir)
    config = resolve(saved, overrides)
    model, base = runs.load_models(run_dir)
    trained = runs.read_json(os.path.join(run_dir, "evaluation.json"), default={})
    run_metrics = runs.read_json(os.path.join(run_dir, "metrics.json"), default={})
    trained_on = runs.trained_classes(run_dir, saved)
    if not same_folder(config["data_dir"], saved["data_dir"]):
        # Another folder: every class is unseen; verification pairs among all of them,
        # its images brought to the size the network was trained on.
        config["data_dir"] = os.path.abspath(config["data_dir"])
        report_dir = report_dir or other_report_dir(run_dir, config["data_dir"])
        size = config["image_size"] or tuple(saved["source_size"])
        imageset = prepare_data.load_folder(config["data_dir"], size,
                                            config["downsample"], config["channels"],
                                            config["max_images_per_class"],
                                            min_images_per_class=2,
                                            strict=config["strict"],
                                            cache_dir=prepare_data.cache_dir(config))
        if saved["data_dir"] and trained_on:
            seen = trained_classes_within(imageset, saved["data_dir"], trained_on)
            if seen:
                raise ValueError(
                    f"{len(seen)} class(es) of {config['data_dir']!r} are classes the "
                    f"run trained or chose its epoch on ({', '.join(seen[:5])}"
                    f"{' ...' if len(seen) > 5 else ''}), reached inside its training "
                    f"folder {saved['data_dir']!r}: they are not unseen. Evaluate the "
                    f"run's own test classes (no --data_dir), or a folder of classes "
                    f"it never saw")
        splits = unseen_splits(imageset, config)
        config["split"] = "classes"
        reference = trained.get("impostor_distances", {})  # {}: an older run, no check
    else:
        imageset = prepare_data.load_dataset(config)
        splits = prepare_data.build_splits(imageset, config)
        reference = None
        if trained_on:
            runs.check_same_classes(imageset, splits, trained_on,
                                            config["data_dir"])
        if run_metrics.get("refit_epochs"):
            # The kept network learnt from the validation classes too; its threshold
            # was calibrated on them before that.
            splits = prepare_data.merge_validation(splits)
    # The run's calibrated threshold, for a folder with no validation pairs and for a
    # refit run (calibrated before the refit; metrics.json keeps it in case training
    # stopped before its evaluation.json).
    calibrated = trained.get("threshold", run_metrics.get("refit_threshold"))
    if calibrated is None:
        calibrated = losses.fixed_threshold(config)
    return evaluate(run_dir, config, imageset, splits, metrics.embed(base, imageset.images),
                    threshold=calibrated,
                    report_dir=report_dir, scorer=siamese_network_funcs.pair_scorer(model),
                    reference=reference)


def lake_benchmark(run_dir, all_runs_dir, report_dir=None):
    """Lake et al.'s 20 runs scored through predict.Matcher, the network users use."""
    from predict import Matcher
    return lake_runs.benchmark(Matcher(run_dir), all_runs_dir, report_dir or run_dir)


def main(argv):
    if wants_help(argv):
        print(help_text(__doc__, EVALUATION_KEYS,
                        "Settings besides --run_dir and --report_dir (--key=value; "
                        "unset, each is the run's own):"))
        return 0
    try:
        options = parse_args([a for a in argv if not a.startswith(("--run_dir=",
                                                                   "--report_dir="))])
        named = dict(a[2:].split("=", 1) for a in argv
                     if a.startswith(("--run_dir=", "--report_dir=")))
        if "run_dir" not in named:
            raise ValueError("say which run to evaluate: --run_dir=runs/<run folder>")
        unknown = set(options) - set(EVALUATION_KEYS)
        if unknown:
            raise ValueError(f"{', '.join(sorted(unknown))} cannot change after "
                             f"training; evaluate.py accepts --run_dir, --report_dir and "
                             f"{', '.join('--' + k for k in EVALUATION_KEYS)}")
        if "lake_runs" in options:
            if len(options) > 1:
                raise ValueError(f"--lake_runs scores Lake's runs alone (their ways, "
                                 f"tasks and folder are fixed): drop "
                                 f"{', '.join('--' + k for k in options if k != 'lake_runs')}"
                                 f", or evaluate them in a command of their own")
            lake_benchmark(named["run_dir"], options["lake_runs"], named.get("report_dir"))
        else:
            evaluate_run(named["run_dir"], options, named.get("report_dir"))
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
