"""distribute="mirrored": the same training on two logical CPU devices gives the same
losses as on one device (tf.distribute splits each batch; gradients are all-reduced;
in-batch losses gather the replicas' slices, so each still scores the whole batch)."""
import pytest
import json
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import json, sys
    import tf_setup
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import backbones, train
    from configurator import get_config
    # No dropout or batch norm: their per-replica randomness and statistics would
    # make the two runs differ for reasons other than distribution.
    backbones.BACKBONES["tiny"] = dict(conv=[(4, 3, True)],
                                                       embedding_dim=8)
    recipe = json.loads(sys.argv[2])
    losses = {}
    for distribute in ("none", "mirrored"):
        config = get_config(dataset="digits", out_dir=sys.argv[1], architecture="tiny",
                            epochs=2,
                            total_sample_size=400, batch_size=32, optimizer="sgd",
                            learning_rate=0.05, distribute=distribute, **recipe)
        run_dir = train.train(config)
        with open(run_dir + "/history.csv") as handle:
            rows = list(__import__("csv").DictReader(handle))
        losses[distribute] = [float(row[key]) for row in rows
                              for key in ("loss", "val_loss")]
        losses[distribute + "_replicas"] = train.make_strategy(distribute).num_replicas_in_sync
    print("LOSSES" + json.dumps(losses))
""")


@pytest.mark.parametrize("recipe", [
    {},  # pairs, contrastive
    # In-batch losses: each replica holds 2 of the batch's 4 classes (a validation
    # batch: 1 of 2), so without the gather the triplet loss has no impostors there.
    dict(pairing="batch", loss="triplet", mining="hard", soft_margin=True),
    dict(pairing="batch", loss="supcon"),
    dict(pairing="batch", loss="contrastive"),
])
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, recipe):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path),
                           json.dumps(recipe)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("LOSSES")][0]
    losses = json.loads(line[len("LOSSES"):])
    assert losses["none_replicas"] == 1 and losses["mirrored_replicas"] == 2
    assert len(losses["mirrored"]) == len(losses["none"]) == 4  # 2 x (loss, val_loss)
    for single, mirrored in zip(losses["none"], losses["mirrored"]):
        assert abs(single - mirrored) <= 1e-3 * abs(single), losses
    assert losses["none"][2] < losses["none"][0]  # it did train
