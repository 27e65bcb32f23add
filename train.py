"""Train a Siamese network as configs.py says, on the CPU by default.

    python train.py                     # offline default: the shipped mini Omniglot
    python train.py --dataset=omniglot --data_dir=PATH/TO/omniglot/images_background
    python train.py --dataset=folder --data_dir=my_photos --image_size=64,64

Writes a new folder under out_dir with the weights, the architecture JSON, the full
model, the embedding network, the config, the history, plots and test metrics.
"""
import os
import sys
import time

import numpy as np

import tf_setup  # noqa: F401  (quiet TensorFlow before keras loads it)
import keras

import distribute
import evaluate
import lake_runs
import metrics
import plots
import prepare_data
import runs
import siamese_network_funcs
from configurator import (IN_BATCH_LOSSES, defaults, get_config, help_text, parse_args,
                          resolve, wants_help)


class SaveProgress(keras.callbacks.Callback):
    """Redraw the accuracy/loss plots after every epoch, so an interrupted run has them."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        plots.plot_history(self.history, self.run_dir)


class LogLearningRate(keras.callbacks.Callback):
    """Log the learning rate each epoch ended with, so history.csv shows the schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class ValidationOneShot(keras.callbacks.Callback):
    """Log `val_oneshot`, N-way one-shot accuracy on fixed validation tasks, each epoch
    (Koch et al. choose their model by it); only the tasks' images are embedded."""

    def __init__(self, model, base, images, tasks):
        super().__init__()
        queries, candidates, self.answers = tasks
        self.pair_model, self.base = model, base
        self.needed = np.unique(np.concatenate([queries, candidates.ravel()]))
        self.images = images[self.needed]
        self.queries = np.searchsorted(self.needed, queries)
        self.candidates = np.searchsorted(self.needed, candidates)

    def on_epoch_end(self, epoch, logs=None):
        embeddings = metrics.embed(self.base, self.images)
        logs["val_oneshot"] = metrics.oneshot_accuracy(
            embeddings, self.queries, self.candidates, self.answers,
            head=siamese_network_funcs.l1_head(self.pair_model))


def training_setup(config, imageset, splits, model, base, first_epoch=0):
    """(network to fit, training data, validation data, steps per epoch) for the
    configured pairing.

    pairing="pairs" fits the pair model on the split's pairs. pairing="batch" fits the
    base network on P x K batches of the same classes and scores every pair inside
    each batch; an epoch has as many steps as "pairs" mode would with batch_size
    images per step (2 per pair), fewer images when P is capped at the classes there are.
    A resumed run's data starts at `first_epoch`, where the interrupted run stopped.
    """
    batch = config["batch_size"]
    augment = (prepare_data.make_augmenter(imageset.images.shape[1:], config["flip"],
                                           config["erase"], config["seed"])
               if config["augment"] else None)
    validating = len(splits.val[1]) > 0  # not in a refit, where validation joined training
    if config["pairing"] == "pairs":
        steps = -(-len(splits.train[1]) // batch)
        siamese_network_funcs.compile_model(model, config, steps)
        return (model,
                prepare_data.pair_dataset(imageset.images, *splits.train, batch,
                                          shuffle=True, seed=config["seed"],
                                          augment=augment, first_epoch=first_epoch),
                prepare_data.pair_dataset(imageset.images, *splits.val, batch)
                if validating else None, steps)
    per_class = config["images_per_class"]
    classes = {name: (imageset.labels, splits.class_split[name], imageset.groups)
               for name in ("train", "val")}
    rotations = config["class_rotations"]
    if rotations:
        height, width = imageset.images.shape[1:3]
        if height != width:
            raise ValueError(f"class_rotations=True turns images by 90 degrees, so they "
                             f"must be square, but these are {height}x{width}: set "
                             f"--image_size=S,S or --class_rotations=False")
        classes["train"] = prepare_data.rotated_classes(*classes["train"])
    steps = max(1, 2 * len(splits.train[1]) // batch)
    fitted = siamese_network_funcs.compile_embedding(  # one group per (virtual) class
        base, config, steps, num_classes=len(classes["train"][2]))
    # normsoftmax's class vectors belong to the training classes, so its loss on the
    # validation classes means nothing; val_oneshot measures that run instead.
    counts = {"train": steps * config["epochs"]}
    if validating and config["loss"] != "normsoftmax":
        counts["val"] = max(1, 2 * len(splits.val[1]) // batch)
    classes_asked = batch // per_class
    batches = {}
    # Each part from its own generator, so the validation batches do not depend on
    # how many training batches were drawn (--epochs may change on --resume).
    seeds = {"train": config["seed"], "val": [config["seed"], 1]}
    for name, n in counts.items():
        labels, class_ids, groups = classes[name]
        rng = np.random.default_rng(seeds[name])
        batches[name] = prepare_data.pk_batches(labels, class_ids, classes_asked,
                                                per_class, n, rng, groups,
                                                config["batch_groups"])
    classes_per_batch = batches["train"].shape[1] // per_class
    # P is capped at the training classes, so a small split gets smaller batches than
    # batch_size: say so rather than let batch_size mislead.
    capped = (f" (batch_size={batch} asks for {classes_asked} classes; training has "
              f"{classes_per_batch})" if classes_per_batch < classes_asked else "")
    print(f"P x K batches: {classes_per_batch} classes x {per_class} images = "
          f"{classes_per_batch * per_class} images per step{capped}, {steps} steps per "
          f"epoch")
    val_data = (prepare_data.image_dataset(imageset.images, imageset.labels,
                                           batches["val"]) if "val" in batches else None)
    return (fitted,
            prepare_data.image_dataset(imageset.images, classes["train"][0],
                                       batches["train"][first_epoch * steps:], augment,
                                       rotations),
            val_data, steps)


def build_network(config, input_shape):
    """(pair model, base network) as the config describes, freshly initialised."""
    return siamese_network_funcs.build_siamese_model(
        input_shape, config["architecture"],
        normalize=config["normalize"] or config["loss"] in IN_BATCH_LOSSES,
        distance=config["distance"], projection_head=config["projection_head"],
        conv_dropout=config["conv_dropout"])


def refit(config, imageset, splits, epochs, run_dir, strategy):
    """A fresh network fitted on the training and validation classes together for
    `epochs`, with the same recipe; (pair model, base), or None when a NaN loss
    stopped it (the network chosen on validation is then kept). Ctrl-C raises
    KeyboardInterrupt, as in any fit."""
    print(f"refit: a fresh network on the training and validation classes for the "
          f"{epochs} epochs validation chose")
    keras.utils.set_random_seed(config["seed"])
    config = dict(config, epochs=epochs)  # a cosine schedule then ends with the refit
    with strategy.scope():
        model, base = build_network(config, imageset.images.shape[1:])
        fitted, train_data, _, steps = training_setup(config, imageset, splits, model,
                                                      base)
    history = fitted.fit(train_data, epochs=epochs, steps_per_epoch=steps,
                         callbacks=[LogLearningRate(), keras.callbacks.TerminateOnNaN()],
                         shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    runs.write_history(os.path.join(run_dir, "refit_history.csv"), history.history)
    if not np.isfinite(history.history["loss"][-1]):
        print("the refit's loss became NaN: keeping the network chosen on validation")
        return None
    return model, base


def save_run(run_dir, model, base, config):
    """Every reloadable form of the trained model, each written atomically."""
    path = lambda name: os.path.join(run_dir, name)  # noqa: E731
    runs.atomic_write(path("model.weights.h5"), model.save_weights)
    runs.atomic_write(path("model.keras"), model.save)
    runs.atomic_write(path("embedding.keras"), base.save)

    def write_architecture(temporary):
        with open(temporary, "w") as handle:
            handle.write(model.to_json())
    runs.atomic_write(path("model_architecture.json"), write_architecture)


def report(run_dir, config, saved_config, imageset, splits, model, base, record,
           calibrated=None):
    """metrics.json (pair accuracy at the write-ups' fixed rule on every part, with
    `record` of the training), then the evaluation (evaluate.evaluate); the other
    workers of a cluster only embed their share of the images for the chief."""
    threshold = siamese_network_funcs.fixed_threshold(config)  # the write-ups' rule
    embeddings = metrics.embed(base, imageset.images)
    if not distribute.is_chief(config):
        return  # the chief writes the evaluation
    if not np.all(np.isfinite(embeddings)):
        raise RuntimeError(
            f"training diverged: the network kept in {run_dir} outputs NaN or infinite "
            f"values, so it cannot be evaluated or used. Lower --learning_rate (now "
            f"{config['learning_rate']:g}) and train again")
    head = siamese_network_funcs.l1_head(model)
    results = {"split": config["split"], "threshold": threshold, **record}
    classes = prepare_data.class_names_by_part(imageset, splits)
    for name in ("train", "val", "test"):
        pairs, labels = getattr(splits, name)
        results[f"n_{name}_pairs"] = int(len(labels))
        results[f"{name}_classes"] = classes[name]
        if len(labels):  # none for validation after a refit
            distances = metrics.pair_distances(embeddings, pairs, head)
            results[f"{name}_pair_accuracy"] = metrics.pair_accuracy(distances, labels,
                                                                     threshold)
    runs.write_json(os.path.join(run_dir, "metrics.json"), results)
    # For triplet, supcon and normsoftmax runs the rule means nothing: the evaluation
    # below reports it with that caveat, beside the calibrated threshold.
    if "test_pair_accuracy" in results and siamese_network_funcs.fixed_rule_applies(
            config):
        print(f"test pair accuracy at the write-ups' fixed "
              f"{siamese_network_funcs.fixed_rule(config)}: "
              f"{results['test_pair_accuracy']:.4f} ({results['n_test_pairs']} pairs)")
    evaluate.evaluate(run_dir, saved_config, imageset, splits, embeddings,
                      threshold=calibrated, head=head)


def train(config):
    """Fit the model a config describes; returns the run folder (None on a worker of
    a cluster other than its chief, which keeps none)."""
    keras.utils.set_random_seed(config["seed"])
    started = time.time()
    config = distribute.own_run(config)  # a worker other than the chief: its own folder
    imageset = prepare_data.load_dataset(config)
    splits = prepare_data.build_splits(imageset, config)
    if config["resume"]:
        trained = runs.trained_classes(config["resume"], runs.read_config(config["resume"]))
        if trained:
            prepare_data.check_same_classes(imageset, splits, trained, config["data_dir"])
    input_shape = imageset.images.shape[1:]
    print(f"data: {len(imageset.images)} images of {input_shape[1]}x{input_shape[0]}x"
          f"{input_shape[2]} in {len(imageset.class_names)} classes; split={config['split']}"
          f": {len(splits.train[1])} train / {len(splits.val[1])} val / "
          f"{len(splits.test[1])} test pairs (half genuine)")

    if not len(splits.class_split["test"]):
        parts = "parent folders" if config["split"] == "groups" else "classes"
        print(f"test_fraction=0: no {parts} are held back for testing; all but the "
              f"validation part train. Test on classes never seen in training "
              f"afterwards (evaluate.py --lake_runs=DIR or --data_dir=FOLDER)")
    evaluate.oneshot_ways(imageset, splits, config)  # a --ways too large fails now
    if config["lake_runs"]:
        lake_runs.read_runs(config["lake_runs"])  # a wrong folder fails now, not after
    val_tasks = evaluate.validation_tasks(imageset, splits, config)
    if config["monitor"] == "val_oneshot" and not val_tasks:
        raise ValueError("monitor='val_oneshot' needs validation classes of their own: "
                         "use --split=classes or --split=groups, or --monitor=val_loss")
    history, done = {}, 0  # done: epochs an interrupted run already finished
    if config["resume"]:
        history_csv = os.path.join(config["resume"], "history.csv")
        history = runs.read_history(history_csv)
        backup = os.path.join(config["resume"], "backup")
        if history and not os.path.isdir(backup):
            raise ValueError(f"{config['resume']} has no backup/ folder to resume from: "
                             f"its training finished. Evaluate it with python "
                             f"evaluate.py --run_dir={config['resume']}, or start a new run")
        # Keras restarts after the epoch its backup holds; an epoch logged after that
        # backup (Ctrl-C between the two) is trained again, so its row goes.
        done = runs.backup_epoch(backup)
        if len(history.get("loss", [])) > done:
            history = {key: values[:done] for key, values in history.items()}
            runs.write_history(history_csv, history)
        if config["epochs"] < done:
            raise ValueError(f"{config['resume']} has already trained {done} epochs, so "
                             f"--epochs={config['epochs']} leaves nothing to continue: "
                             f"give --epochs={done + 1} or more")
        print(f"resuming {config['resume']} after epoch {done}"
              + (" (all its epochs: finishing the run)" if done == config["epochs"]
                 else ""))

    strategy = distribute.make_strategy(config["distribute"])
    distribute.check_same_epoch(strategy, config, done)
    with strategy.scope():  # variables are mirrored on every device of the strategy
        model, base = build_network(config, input_shape)
        fitted, train_data, val_data, steps = training_setup(
            config, imageset, splits, model, base, first_epoch=done)
    # The run folder only once the network and its data are built, so a setting that
    # cannot work leaves no empty run behind.
    run_dir = (config["resume"] or distribute.new_worker_dir(config)
               or runs.new_run_dir(config["out_dir"], config["dataset"]))
    # The rate the network trains with, not None, so a resumed run keeps it even if
    # the architecture's own rate changes.
    saved_config = dict(config, source_size=imageset.source_size, resume="",
                        conv_dropout=siamese_network_funcs.conv_dropout_rate(
                            config["architecture"], config["conv_dropout"]),
                        classes=prepare_data.class_names_by_part(imageset, splits))
    if saved_config["data_dir"]:
        saved_config["data_dir"] = os.path.abspath(saved_config["data_dir"])
    runs.write_json(os.path.join(run_dir, "config.json"), saved_config)

    if strategy.num_replicas_in_sync > 1:
        print(f"distribute={config['distribute']}: {strategy.num_replicas_in_sync} "
              f"replicas share each batch of {config['batch_size']}; this process "
              f"writes to {run_dir}")
    loss_name = f"{config['loss']} loss ({config['mining']} mining)" \
        if config["loss"] == "triplet" else f"{config['loss']} loss"
    projection = " (+ a projection head for training)" if config["projection_head"] else ""
    print(f"model: {config['architecture']} base, {base.count_params():,} parameters"
          f"{projection}, {loss_name}, pairing={config['pairing']}, {config['optimizer']} "
          f"lr={config['learning_rate']}"
          + (f" weight_decay={config['weight_decay']}" if config["weight_decay"] else ""))

    checkpoint = os.path.join(run_dir, "checkpoint.weights.h5")
    progress = SaveProgress(run_dir)
    progress.history = history
    mode = "max" if config["monitor"] == "val_oneshot" else "min"
    best_so_far = runs.best_logged(history, config["monitor"], mode)  # on --resume
    callbacks = ([ValidationOneShot(model, base, imageset.images, val_tasks)]
                 if val_tasks else [])
    callbacks.append(LogLearningRate())  # before ReduceLROnPlateau changes the rate
    if config["reduce_lr_patience"]:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config["monitor"], mode=mode, factor=0.5,
            patience=config["reduce_lr_patience"], verbose=1))
    callbacks += [  # after ValidationOneShot, so they all see val_oneshot
        keras.callbacks.ModelCheckpoint(checkpoint, monitor=config["monitor"], mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"),
                                  append=bool(config["resume"])),
        keras.callbacks.TerminateOnNaN(),
        progress,
        # The last finished epoch (weights, optimizer, epoch number) for --resume=RUN,
        # saved after the epoch's checkpoint and history row, so a backup never holds
        # an epoch they lack; removed when training ends normally.
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),
                                         double_checkpoint=True),
    ]
    if config["patience"]:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=config["monitor"], mode=mode, patience=config["patience"],
            restore_best_weights=True))

    interrupted = False
    try:
        fitted.fit(train_data, validation_data=val_data, epochs=config["epochs"],
                   steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                   verbose=1 if sys.stdout.isatty() else 2)  # no bar redraws in logs
    except KeyboardInterrupt:
        interrupted = True
    losses = progress.history.get("loss", [])
    if interrupted and not losses:
        # Stopped inside the first epoch: its weights are half-trained, not worth
        # saving or evaluating as a run's result.
        print(f"\ninterrupted during the first epoch: no epoch finished, so there is "
              f"no network to keep; python train.py --resume={run_dir} starts it again")
        return run_dir
    if interrupted:
        print(f"\ninterrupted after {len(losses)} finished epoch(s): keeping the best "
              f"of them; continue with python train.py --resume={run_dir}")
    if losses and not np.isfinite(losses[-1]):
        print("the loss became NaN, so training stopped: keeping the best checkpoint "
              "so far; a lower --learning_rate may train further")
    if os.path.exists(checkpoint):
        fitted.load_weights(checkpoint)  # the best epoch on config["monitor"]
    save_run(run_dir, model, base, config)
    calibrated, refit_epochs = None, 0
    if config["refit"] and not interrupted and losses and np.isfinite(losses[-1]):
        # The verification threshold is calibrated while the validation pairs are
        # still unseen; the refit network then learns from them too.
        calibrated = metrics.best_threshold(
            metrics.pair_distances(metrics.embed(base, imageset.images), splits.val[0],
                                   siamese_network_funcs.l1_head(model)),
            splits.val[1])[0]
        epochs = runs.best_epoch(progress.history, config["monitor"], mode)
        merged = prepare_data.merge_validation(splits)
        try:
            refitted = refit(config, imageset, merged, epochs, run_dir, strategy)
        except KeyboardInterrupt:
            interrupted, refitted = True, None
            print("\nrefit interrupted: keeping the network chosen on validation")
        if refitted:
            (model, base), splits, refit_epochs = refitted, merged, epochs
            save_run(run_dir, model, base, config)

    record = {"epochs_run": len(progress.history.get("loss", [])),
              "interrupted": interrupted, "refit_epochs": refit_epochs,
              "refit_threshold": calibrated,  # for evaluate.py, should this stop
              "train_seconds": round(time.time() - started, 1)}
    try:
        report(run_dir, config, saved_config, imageset, splits, model, base, record,
               calibrated)
        if config["lake_runs"] and distribute.is_chief(config):
            evaluate.lake_benchmark(run_dir, config["lake_runs"])
    except KeyboardInterrupt:
        print(f"\ninterrupted during the evaluation: the trained network is saved in "
              f"{run_dir}; python evaluate.py --run_dir={run_dir} evaluates it and "
              f"calibrates the threshold that predict.py uses")
        return run_dir
    if not distribute.finish(run_dir, config):
        return None
    print(f"run folder: {run_dir}")
    return run_dir


def resume_config(argv):
    """The config of the run that --resume=RUN names; only epochs and patience may
    change, so the data, split and pairs are those of the interrupted run."""
    explicit = parse_args(argv)
    run_dir = explicit.pop("resume")
    changed = set(explicit) - {"epochs", "patience"}
    if changed:
        raise ValueError(f"--resume continues {run_dir} with its own settings; only "
                         f"--epochs and --patience may change, not "
                         f"{', '.join('--' + k for k in sorted(changed))}")
    saved = runs.read_config(run_dir)
    known = {k: v for k, v in saved.items() if k in defaults()}
    return resolve(known, dict(explicit, resume=run_dir))


def main(argv):
    if wants_help(argv):
        print(help_text(__doc__, argv=argv))
        return 0
    try:
        resuming = any(arg.startswith("--resume=") for arg in argv)
        config = resume_config(argv) if resuming else get_config(argv)
        train(config)
    except (ValueError, OSError, RuntimeError, distribute.tf.errors.OpError) as error:
        print(f"error: {tf_setup.error_line(error)}{distribute.restart_hint(error)}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
