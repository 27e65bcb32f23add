"""The project's own Keras callbacks: progress plots, the learning-rate log and
N-way one-shot accuracy on the validation classes."""

import tf_setup  # noqa: F401  (quiet TensorFlow before keras loads it)
import keras

import metrics
import plots
import siamese_network_funcs


class SaveProgress(keras.callbacks.Callback):
    """Redraw the accuracy/loss plots after every epoch, so an interrupted run has them.
    `history` holds what earlier epochs logged (a resumed run's)."""

    def __init__(self, run_dir, history=None):
        super().__init__()
        self.run_dir = run_dir
        self.history = history or {}

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
        self.pair_model, self.base = model, base
        rows, self.tasks = metrics.task_rows(tasks)
        self.images = images[rows]

    def on_epoch_end(self, epoch, logs=None):
        embeddings = metrics.embed(self.base, self.images)
        logs["val_oneshot"] = metrics.oneshot_accuracy(
            embeddings, *self.tasks, siamese_network_funcs.pair_scorer(self.pair_model))
