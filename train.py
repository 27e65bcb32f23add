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

import tf_setup  # quiets TensorFlow before keras loads it; error_line
import keras

import augment
import backbones
import callbacks
import distribute
import evaluate
import lake_runs
import losses
import prepare_data
import runs
import samplers
import siamese_network_funcs
from configurator import defaults, get_config, help_text, parse_args, resolve, wants_help


def training_setup(config, imageset, splits, model, base, first_epoch=0):
    """(network to fit, training data, validation data, steps per epoch) for the
    configured pairing.

    pairing="pairs" fits the pair model on the split's pairs. pairing="batch" fits the
    base network on P x K batches of the same classes and scores every pair inside
    each batch; an epoch has as many steps as "pairs" mode would with batch_size
    images per step (2 per pair), fewer images when P is capped at the classes there are.
    A resumed run's data starts at `first_epoch`, where the interrupted run stopped.
    """
    augmenter = (augment.make_augmenter(imageset.images.shape[1:], config["flip"],
                                        config["erase"], config["seed"])
                 if config["augment"] else None)
    if config["pairing"] == "batch":
        return batch_training(config, imageset, splits, model, base, augmenter,
                              first_epoch)
    batch = config["batch_size"]
    steps = -(-len(splits.train[1]) // batch)
    network = siamese_network_funcs.compile_network(config, model, base, steps)
    train_data = prepare_data.pair_dataset(imageset.images, *splits.train, batch,
                                           shuffle=True, seed=config["seed"],
                                           augment=augmenter, first_epoch=first_epoch)
    val_data = (prepare_data.pair_dataset(imageset.images, *splits.val, batch)
                if len(splits.val[1]) else None)  # none in a refit
    return network, train_data, val_data, steps


def batch_training(config, imageset, splits, model, base, augmenter, first_epoch):
    """training_setup for pairing="batch": P x K batches (samplers.pk_batches)."""
    steps = max(1, 2 * len(splits.train[1]) // config["batch_size"])
    classes = {name: (imageset.labels, splits.class_split[name], imageset.groups)
               for name in ("train", "val")}
    if config["class_rotations"]:
        height, width = imageset.images.shape[1:3]
        if height != width:
            raise ValueError(f"class_rotations=True turns images by 90 degrees, so they "
                             f"must be square, but these are {height}x{width}: set "
                             f"--image_size=S,S or --class_rotations=False")
        classes["train"] = samplers.rotated_classes(*classes["train"])
    network = siamese_network_funcs.compile_network(  # one group per (virtual) class
        config, model, base, steps, num_classes=len(classes["train"][2]))
    counts = {"train": steps * config["epochs"]}
    # Where the loss on the validation classes means nothing (losses.LossSpec),
    # val_oneshot measures the run instead.
    if len(splits.val[1]) and losses.LOSSES[config["loss"]].validation_loss:
        counts["val"] = max(1, 2 * len(splits.val[1]) // config["batch_size"])
    batches = samplers.pk_schedule(config, classes, counts)
    print(samplers.describe_batches(config, batches["train"], steps))
    val_data = (prepare_data.image_dataset(imageset.images, imageset.labels,
                                           batches["val"]) if "val" in batches else None)
    return (network,
            prepare_data.image_dataset(imageset.images, classes["train"][0],
                                       batches["train"][first_epoch * steps:], augmenter,
                                       config["class_rotations"]),
            val_data, steps)


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
        model, base = siamese_network_funcs.build_network(config,
                                                          imageset.images.shape[1:])
        network, train_data, _, steps = training_setup(config, imageset, splits, model,
                                                       base)
    history = network.fit(train_data, epochs=epochs, steps_per_epoch=steps,
                          callbacks=[callbacks.LogLearningRate(),
                                     keras.callbacks.TerminateOnNaN()],
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


def load_data(config):
    """(imageset, splits, validation one-shot tasks), each setting checked against the
    data before any training: a --ways too large, Lake's runs folder, the monitor,
    and on --resume the classes the run trained on."""
    imageset = prepare_data.load_dataset(config)
    splits = prepare_data.build_splits(imageset, config)
    if config["resume"]:
        trained = runs.trained_classes(config["resume"], runs.read_config(config["resume"]))
        if trained:
            runs.check_same_classes(imageset, splits, trained, config["data_dir"])
    height, width, channels = imageset.images.shape[1:]
    print(f"data: {len(imageset.images)} images of {width}x{height}x{channels} in "
          f"{len(imageset.class_names)} classes; split={config['split']}: "
          f"{len(splits.train[1])} train / {len(splits.val[1])} val / "
          f"{len(splits.test[1])} test pairs (half genuine)")
    if imageset.origin:
        print(f"images: {imageset.origin}")
    if not len(splits.class_split["test"]):
        parts = "parent folders" if config["split"] == "groups" else "classes"
        print(f"test_fraction=0: no {parts} are held back for testing; all but the "
              f"validation part train. Test on classes never seen in training "
              f"afterwards (evaluate.py --lake_runs=DIR or --data_dir=FOLDER)")
    evaluate.oneshot_ways(imageset, splits, config)
    if config["lake_runs"]:
        lake_runs.read_runs(config["lake_runs"])
    val_tasks = evaluate.validation_tasks(imageset, splits, config)
    if config["monitor"] == "val_oneshot" and not val_tasks:
        raise ValueError("monitor='val_oneshot' needs validation classes of their own: "
                         "use --split=classes or --split=groups, or --monitor=val_loss")
    return imageset, splits, val_tasks


def start_run(config, imageset, splits, base):
    """The run folder (a new one, or the resumed run's) with its config.json, and that
    saved config; says what will train."""
    run_dir = (config["resume"] or distribute.new_worker_dir(config)
               or runs.new_run_dir(config["out_dir"], config["dataset"]))
    # The rate the network trains with, not None, so a resumed run keeps it even if
    # the architecture's own rate changes.
    saved_config = dict(config, source_size=imageset.source_size, resume="",
                        conv_dropout=backbones.conv_dropout_rate(config["architecture"],
                                                                 config["conv_dropout"]),
                        classes=prepare_data.class_names_by_part(imageset, splits))
    if saved_config["data_dir"]:
        saved_config["data_dir"] = os.path.abspath(saved_config["data_dir"])
    runs.write_json(os.path.join(run_dir, "config.json"), saved_config)
    projection = " (+ a projection head for training)" if config["projection_head"] else ""
    print(f"model: {config['architecture']} base, {base.count_params():,} parameters"
          f"{projection}, {losses.describe(config)}, pairing={config['pairing']}, "
          f"{config['optimizer']} lr={config['learning_rate']}"
          + (f" weight_decay={config['weight_decay']}" if config["weight_decay"] else ""))
    return run_dir, saved_config


def monitor_mode(config):
    """"max" when the monitored figure is an accuracy (val_oneshot), else "min"."""
    return "max" if config["monitor"] == "val_oneshot" else "min"


def make_callbacks(config, run_dir, model, base, images, val_tasks, history):
    """The callbacks of the main fit, in the order they must run; (callbacks,
    SaveProgress, checkpoint path)."""
    checkpoint = os.path.join(run_dir, "checkpoint.weights.h5")
    progress = callbacks.SaveProgress(run_dir, history)
    mode = monitor_mode(config)
    monitored = dict(monitor=config["monitor"], mode=mode)
    chosen = ([callbacks.ValidationOneShot(model, base, images, val_tasks)]
              if val_tasks else [])
    chosen.append(callbacks.LogLearningRate())  # before ReduceLROnPlateau changes it
    if config["reduce_lr_patience"]:
        chosen.append(keras.callbacks.ReduceLROnPlateau(
            factor=0.5, patience=config["reduce_lr_patience"], verbose=1, **monitored))
    chosen += [  # after ValidationOneShot, so they all see val_oneshot
        keras.callbacks.ModelCheckpoint(
            checkpoint, save_best_only=True, save_weights_only=True,
            initial_value_threshold=runs.best_logged(history, config["monitor"], mode),
            **monitored),
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
        chosen.append(keras.callbacks.EarlyStopping(
            patience=config["patience"], restore_best_weights=True, **monitored))
    return chosen, progress, checkpoint


def fit(network, config, train_data, val_data, steps, chosen_callbacks):
    """network.fit over config["epochs"]; True when Ctrl-C stopped it."""
    try:
        network.fit(train_data, validation_data=val_data, epochs=config["epochs"],
                    steps_per_epoch=steps, callbacks=chosen_callbacks, shuffle=False,
                    verbose=1 if sys.stdout.isatty() else 2)  # no bar redraws in logs
    except KeyboardInterrupt:
        return True
    return False


def keep_best(config, run_dir, network, checkpoint, losses_logged, interrupted):
    """Load the best checkpoint into `network` and say why training ended early;
    False when no epoch finished, so there is no network worth keeping."""
    again = distribute.continue_command(config, run_dir)
    if interrupted and not losses_logged:
        # Stopped inside the first epoch: its weights are half-trained, not worth
        # saving or evaluating as a run's result.
        print(f"\ninterrupted during the first epoch: no epoch finished, so there is "
              f"no network to keep; {again} starts it again")
        return False
    if interrupted:
        print(f"\ninterrupted after {len(losses_logged)} finished epoch(s): keeping the "
              f"best of them; continue with {again}")
    if losses_logged and not np.isfinite(losses_logged[-1]):
        print("the loss became NaN, so training stopped: keeping the best checkpoint "
              "so far; a lower --learning_rate may train further")
    if os.path.exists(checkpoint):
        network.load_weights(checkpoint)  # the best epoch on config["monitor"]
    return True


def refit_step(config, imageset, splits, model, base, history, run_dir, strategy):
    """With config["refit"]: calibrate the threshold on the validation pairs, then
    refit on training and validation classes (refit). Returns (model, base, splits,
    refit epochs, calibrated threshold, interrupted)."""
    calibrated = evaluate.calibrated_threshold(base, model, imageset, splits)
    epochs = runs.best_epoch(history, config["monitor"], monitor_mode(config))
    merged = prepare_data.merge_validation(splits)
    try:
        refitted = refit(config, imageset, merged, epochs, run_dir, strategy)
    except KeyboardInterrupt:
        print("\nrefit interrupted: keeping the network chosen on validation")
        return model, base, splits, 0, calibrated, True
    if not refitted:
        return model, base, splits, 0, calibrated, False
    save_run(run_dir, *refitted, config)
    return (*refitted, merged, epochs, calibrated, False)


def train(config):
    """Fit the model a config describes; returns the run folder (None on a worker of
    a cluster other than its chief, which keeps none)."""
    keras.utils.set_random_seed(config["seed"])
    started = time.time()
    config = distribute.own_run(config)  # a worker other than the chief: its own folder
    imageset, splits, val_tasks = load_data(config)
    history, done = (runs.resume_state(config["resume"], config["epochs"])
                     if config["resume"] else ({}, 0))
    strategy = distribute.make_strategy(config["distribute"])
    distribute.check_same_epoch(strategy, config, done)
    with strategy.scope():  # variables are mirrored on every device of the strategy
        model, base = siamese_network_funcs.build_network(config,
                                                          imageset.images.shape[1:])
        network, train_data, val_data, steps = training_setup(
            config, imageset, splits, model, base, first_epoch=done)
    # The run folder only once the network and its data are built, so a setting that
    # cannot work leaves no empty run behind.
    run_dir, saved_config = start_run(config, imageset, splits, base)
    if strategy.num_replicas_in_sync > 1:
        print(f"distribute={config['distribute']}: {strategy.num_replicas_in_sync} "
              f"replicas share each batch of {config['batch_size']}; this process "
              f"writes to {run_dir}")
    chosen, progress, checkpoint = make_callbacks(config, run_dir, model, base,
                                                  imageset.images, val_tasks, history)
    interrupted = fit(network, config, train_data, val_data, steps, chosen)
    logged = progress.history.get("loss", [])
    if not keep_best(config, run_dir, network, checkpoint, logged, interrupted):
        return run_dir
    save_run(run_dir, model, base, config)
    calibrated, refit_epochs = None, 0
    if config["refit"] and not interrupted and logged and np.isfinite(logged[-1]):
        model, base, splits, refit_epochs, calibrated, interrupted = refit_step(
            config, imageset, splits, model, base, progress.history, run_dir, strategy)
    record = {"epochs_run": len(logged), "interrupted": interrupted,
              "refit_epochs": refit_epochs,
              "refit_threshold": calibrated,  # for evaluate.py, should this stop
              "train_seconds": round(time.time() - started, 1)}
    return finish(run_dir, config, saved_config, imageset, splits, model, base, record)


def finish(run_dir, config, saved_config, imageset, splits, model, base, record):
    """The run's evaluation (evaluate.training_report), then Lake's runs if asked;
    Ctrl-C here keeps the saved network. Returns the run folder."""
    try:
        evaluate.training_report(run_dir, config, saved_config, imageset, splits, model,
                                 base, record)
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
