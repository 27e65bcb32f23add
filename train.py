"""Train a Siamese network as configs.py says, on the CPU by default.

    python train.py                                  # offline default: digits
    python train.py --dataset=att_faces --data_dir=data/att_faces --split=pairs

Writes a new folder under out_dir with the weights, the architecture JSON, the full
model, the embedding network, the config, the history, plots and test metrics.
"""
import os
import sys
import time

import numpy as np

import tf_setup  # noqa: F401  (quiet TensorFlow before keras loads it)
import keras

import evaluate
import metrics
import plots
import prepare_data
import runs
import siamese_network_funcs
from configurator import get_config


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


def train(config):
    """Fit the model a config describes; returns the run folder."""
    keras.utils.set_random_seed(config["seed"])
    started = time.time()
    imageset = prepare_data.load_dataset(config)
    splits = prepare_data.build_splits(imageset, config)
    input_shape = imageset.images.shape[1:]
    print(f"data: {len(imageset.images)} images of {input_shape[1]}x{input_shape[0]}x"
          f"{input_shape[2]} in {len(imageset.class_names)} classes; split={config['split']}"
          f": {len(splits.train[1])} train / {len(splits.val[1])} val / "
          f"{len(splits.test[1])} test pairs (half genuine)")

    run_dir = runs.new_run_dir(config["out_dir"], config["dataset"])
    saved_config = dict(config, source_size=imageset.source_size)
    if saved_config["data_dir"]:
        saved_config["data_dir"] = os.path.abspath(saved_config["data_dir"])
    runs.write_json(os.path.join(run_dir, "config.json"), saved_config)

    model, base = siamese_network_funcs.build_siamese_model(input_shape,
                                                            config["architecture"])
    siamese_network_funcs.compile_model(model, config)
    print(f"model: {config['architecture']} base, {model.count_params():,} parameters, "
          f"{config['loss']} loss, {config['optimizer']} lr={config['learning_rate']}")

    batch = config["batch_size"]
    augment = (prepare_data.make_augmenter(input_shape, config["flip"], config["seed"])
               if config["augment"] else None)
    train_data = prepare_data.pair_dataset(imageset.images, *splits.train, batch,
                                           shuffle=True, seed=config["seed"],
                                           augment=augment)
    val_data = prepare_data.pair_dataset(imageset.images, *splits.val, batch)
    checkpoint = os.path.join(run_dir, "checkpoint.weights.h5")
    progress = SaveProgress(run_dir)
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss",
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv")),
        keras.callbacks.TerminateOnNaN(),
        progress,
    ]
    if config["patience"]:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config["patience"], restore_best_weights=True))

    interrupted = False
    try:
        model.fit(train_data, validation_data=val_data, epochs=config["epochs"],
                  callbacks=callbacks, shuffle=False,
                  verbose=1 if sys.stdout.isatty() else 2)  # no bar redraws in logs
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: keeping the best checkpoint so far")
    if os.path.exists(checkpoint):
        model.load_weights(checkpoint)  # the best epoch on validation loss
    save_run(run_dir, model, base, config)

    threshold = config["margin"] / 2  # the seeds' fixed decision rule
    embeddings = metrics.embed(base, imageset.images)
    results = {"split": config["split"], "threshold": threshold,
               "epochs_run": len(progress.history.get("loss", [])),
               "interrupted": interrupted,
               "train_seconds": round(time.time() - started, 1)}
    for name in ("train", "val", "test"):
        pairs, labels = getattr(splits, name)
        distances = metrics.pair_distances(embeddings, pairs)
        results[f"{name}_pair_accuracy"] = metrics.pair_accuracy(distances, labels,
                                                                 threshold)
        results[f"n_{name}_pairs"] = int(len(labels))
        results[f"{name}_classes"] = [imageset.class_names[c]
                                      for c in splits.class_split[name]]
    runs.write_json(os.path.join(run_dir, "metrics.json"), results)
    print(f"test pair accuracy at the fixed threshold {threshold:g}: "
          f"{results['test_pair_accuracy']:.4f} ({results['n_test_pairs']} pairs)")
    evaluate.evaluate(run_dir, saved_config, imageset, splits, embeddings)
    print(f"run folder: {run_dir}")
    return run_dir


def main(argv):
    try:
        config = get_config(argv)
        train(config)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
