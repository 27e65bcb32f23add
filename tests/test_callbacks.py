"""callbacks: the progress plots, the learning-rate log and validation one-shot
accuracy, each on a small real fit."""
import os

import numpy as np
import pytest

import keras
import callbacks
import metrics
import samplers


def _small_fit(extra, epochs=2, learning_rate=0.01, schedule=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    rate = schedule or learning_rate
    model.compile(optimizer=keras.optimizers.SGD(rate), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    return model, model.fit(x, x[:, :3], epochs=epochs, batch_size=8, verbose=0,
                            callbacks=extra)


def test_save_progress_keeps_earlier_epochs_and_redraws_the_plots(tmp_path):
    progress = callbacks.SaveProgress(str(tmp_path), {"loss": [9.0]})  # a resumed run
    _small_fit([progress])
    assert progress.history["loss"][0] == 9.0 and len(progress.history["loss"]) == 3
    assert os.path.getsize(tmp_path / "loss.png") > 1000


def test_log_learning_rate_records_the_rate_each_epoch_ended_with():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2,
                                                           decay_rate=0.5)
    _, history = _small_fit([callbacks.LogLearningRate()], epochs=3, schedule=schedule)
    # 2 steps per epoch: the rate halves once per epoch.
    np.testing.assert_allclose(history.history["learning_rate"], [0.05, 0.025, 0.0125],
                               rtol=1e-5)


def test_validation_one_shot_logs_the_accuracy_of_the_current_embeddings():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 3)
    images = (rng.integers(0, 20, (18, 4, 4, 1)) + 40 * labels[:, None, None, None])
    tasks = samplers.make_oneshot_trials(labels, np.arange(6), 4, 40, rng)
    inputs = keras.Input((4, 4, 1))
    base = keras.Model(inputs, keras.layers.Flatten()(inputs))
    logged = callbacks.ValidationOneShot(base, base, images.astype(np.uint8), tasks)
    logs = {}
    logged.on_epoch_end(0, logs)
    expected = metrics.oneshot_accuracy(images.reshape(18, -1).astype(np.float32), *tasks)
    assert logs["val_oneshot"] == pytest.approx(expected) and expected > 0.9
