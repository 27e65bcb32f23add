"""distribute.py: the strategies, the cluster TF_CONFIG describes and who writes the run
folder. distribute="mirrored": the same training on two logical CPU devices gives the
same losses as on one device (tf.distribute splits each batch; gradients are
all-reduced; in-batch losses gather the replicas' slices, so each still scores the whole
batch). distribute="multi_worker": two worker processes on 127.0.0.1 give the losses of
one process, only the chief keeps a run folder, and a killed worker resumes."""
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import distribute
from conftest import REPO_ROOT

# No dropout or batch norm: their per-replica randomness and statistics would make the
# runs differ for reasons other than distribution.
TINY = 'backbones.BACKBONES["tiny"] = dict(conv=[(4, 3, True)], embedding_dim=8)'
SETTINGS = dict(dataset="digits", architecture="tiny", epochs=2, total_sample_size=400,
                batch_size=32, optimizer="sgd", learning_rate=0.05)
PAIRS = {}  # contrastive loss
# In-batch losses: each replica holds 2 of the batch's 4 classes (a validation batch: 1
# of 2), so without the gather the triplet loss has no impostors there.
TRIPLET = dict(pairing="batch", loss="triplet", mining="hard", soft_margin=True)


# --- TF_CONFIG and who writes the run folder ---------------------------------------

def _environ(spec):
    return {"TF_CONFIG": spec if isinstance(spec, str) else json.dumps(spec)}


TWO = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("spec, named", [
    ("", "is not set"),
    ("{'cluster': 1}", "not valid JSON"),
    ({"task": {"type": "worker", "index": 0}}, 'no "cluster"'),
    ({"cluster": {"worker": ["a:1"]}}, 'no "task"'),
    (dict(TWO, task={"type": "worker", "index": 2}), "index 2 is out of range"),
    (dict(TWO, task={"type": "worker", "index": -1}), "index -1 is out of range"),
    ({"cluster": {"worker": ["a:1", "a:1"]}, "task": TWO["task"]}, "a:1 more than once"),
    ({"cluster": {"chief": ["a:1"], "worker": ["a:1"]}, "task": TWO["task"]},
     "a:1 more than once"),
    (dict(TWO, task={"type": "ps", "index": 0}), "task type 'ps' is not in"),
    ({"cluster": {"worker": ["a:1"], "ps": ["c:3"]}, "task": TWO["task"]},
     "only 'chief' and 'worker'"),
    ({"cluster": {"worker": "a:1,b:2"}, "task": TWO["task"]}, "list of \"host:port\""),
])
def test_a_wrong_tf_config_is_named_in_one_line(spec, named):
    with pytest.raises(ValueError) as raised:
        distribute.cluster_task(_environ(spec))
    message = str(raised.value)
    assert message.startswith("TF_CONFIG") and named in message and "\n" not in message


def test_the_chief_is_the_chief_task_or_else_worker_0():
    config = dict(distribute="multi_worker", out_dir="runs")
    tasks = {"chief": ["c:0"], "worker": ["a:1", "b:2"]}
    chief = {"cluster": tasks, "task": {"type": "chief", "index": 0}}
    assert distribute.is_chief(config, _environ(chief))
    assert not distribute.is_chief(config, _environ(dict(chief, task={"type": "worker",
                                                                      "index": 0})))
    assert distribute.is_chief(config, _environ(dict(TWO, task={"type": "worker",
                                                                "index": 0})))
    assert not distribute.is_chief(config, _environ(TWO))
    assert distribute.worker_dir(config, _environ(TWO)) == os.path.join("runs",
                                                                        ".worker-1")
    # Without multi_worker, TF_CONFIG means nothing to this run.
    assert distribute.is_chief(dict(config, distribute="none"), _environ(TWO))


def test_a_worker_resumes_its_own_folder_and_refuses_the_chiefs_run(tmp_path):
    config = dict(distribute="multi_worker", out_dir=str(tmp_path), resume="")
    assert distribute.own_run(config, _environ(TWO)) == config  # nothing to resume
    backup = tmp_path / ".worker-1" / "backup"
    backup.mkdir(parents=True)
    assert distribute.own_run(config, _environ(TWO))["resume"] == str(backup.parent)
    with pytest.raises(ValueError, match="a worker other than the chief"):
        distribute.own_run(dict(config, resume="runs/x"), _environ(TWO))


def test_ctrl_c_tells_a_worker_how_to_continue_and_the_chief_its_resume():
    config = dict(distribute="multi_worker", out_dir="runs")
    chief = _environ(dict(TWO, task={"type": "worker", "index": 0}))
    assert distribute.continue_command(config, "runs/x", chief) == (
        "python train.py --resume=runs/x")
    other = distribute.continue_command(config, "runs/.worker-1", _environ(TWO))
    assert "--resume=runs/.worker-1" not in other
    assert other.startswith("the command this worker was started with")


def test_train_names_a_wrong_tf_config_in_one_line_before_the_cluster_starts(tmp_path):
    # The environment a user starts it in: this process set TF's log level on import.
    env = {key: value for key, value in os.environ.items()
           if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:1"]},
                                   "task": TWO["task"]})
    done = subprocess.run(
        [sys.executable, "train.py", "--dataset=digits", "--distribute=multi_worker",
         f"--out_dir={tmp_path}"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: TF_CONFIG's cluster lists 127.0.0.1:1 more than once: give every worker "
        "a host:port of its own"], done.stderr
    assert os.listdir(tmp_path) == []


# --- mirrored: two logical devices in one process ----------------------------------

SCRIPT = textwrap.dedent(f"""
    import json, sys
    import tf_setup
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import backbones, plots, prepare_data, train
    from configurator import get_config
    from distribute import make_strategy
    {TINY}
    # The t-SNE plot takes longer than the training here, and is not what is tested.
    plots.plot_embeddings = lambda *args, **kwargs: None
    load_dataset = prepare_data.load_dataset
    stored = []
    prepare_data.load_dataset = lambda config: (
        lambda imageset: stored.append(type(imageset.images).__name__) or imageset)(
        load_dataset(config))
    losses = {{"stored": stored}}
    for distribute in ("none", "mirrored"):
        config = get_config(out_dir=sys.argv[1], distribute=distribute,
                            **json.loads(sys.argv[2]))
        run_dir = train.train(config)
        with open(run_dir + "/history.csv") as handle:
            rows = list(__import__("csv").DictReader(handle))
        losses[distribute] = [float(row[key]) for row in rows
                              for key in ("loss", "val_loss")]
        losses[distribute + "_replicas"] = make_strategy(distribute).num_replicas_in_sync
    print("LOSSES" + json.dumps(losses))
""")


# A process for each recipe: the collectives of one mirrored run cannot be set up
# again by another in the same process. Images in memory, or read from the image
# cache batch by batch (each pipeline kind both ways).
@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's digits as class folders of 8x8 PNG images, as settings."""
    from PIL import Image
    from sklearn.datasets import load_digits
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        os.makedirs(root / str(label), exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(
            root / str(label) / f"{i}.png")
    return dict(dataset="folder", data_dir=str(root), image_size=None, channels=1,
                augment=False, monitor="val_loss", test_fraction=0.3, val_fraction=0.3,
                pairing="pairs", loss="contrastive")


@pytest.mark.parametrize("recipe, images", [
    (PAIRS, "disk"), (TRIPLET, "memory"),
    (dict(pairing="batch", loss="supcon"), "disk"),
    (dict(pairing="batch", loss="contrastive"), "memory"),
])
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, recipe, images,
                                                         digits_folder):
    settings = {**SETTINGS, **(digits_folder if images == "disk" else {}), **recipe}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path),
                           json.dumps(settings)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("LOSSES")][0]
    losses = json.loads(line[len("LOSSES"):])
    expected = "DiskImages" if images == "disk" else "ndarray"
    assert losses["stored"] == [expected, expected]
    assert losses["none_replicas"] == 1 and losses["mirrored_replicas"] == 2
    assert len(losses["mirrored"]) == len(losses["none"]) == 4  # 2 x (loss, val_loss)
    for single, mirrored in zip(losses["none"], losses["mirrored"]):
        assert abs(single - mirrored) <= 1e-3 * abs(single), losses
    assert losses["none"][2] < losses["none"][0]  # it did train


# --- a cluster of worker processes on 127.0.0.1 ------------------------------------

WORKER = textwrap.dedent(f"""
    import sys
    import tf_setup
    import backbones, plots, train
    {TINY}
    # The t-SNE plot takes longer than the training here, and is not what is tested.
    plots.plot_embeddings = lambda *args, **kwargs: None
    sys.exit(train.main(sys.argv[1:]))
""")
CLUSTER = ["--distribute=multi_worker"]
DEADLINE = 240  # seconds a cluster may take before the test stops it and fails


def _flags(settings):
    return [f"--{key}={value}" for key, value in settings.items()]


def _start(argv, out_dir, tf_config=None):
    """python train.py `argv` --out_dir=out_dir as its own process (without --out_dir
    when argv resumes a run); its output goes to out_dir.log."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if tf_config:
        env["TF_CONFIG"] = tf_config
    if not any(arg.startswith("--resume=") for arg in argv):
        argv = argv + [f"--out_dir={out_dir}"]
    with open(f"{out_dir}.log", "a") as log:
        process = subprocess.Popen([sys.executable, "-c", WORKER, *argv], cwd=REPO_ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = f"{out_dir}.log"
    return process


def _start_cluster(root, argv, tf_configs):
    """Worker 0 (the chief) and worker 1, writing under root/w0 and root/w1."""
    return [_start(argv + CLUSTER, root / f"w{index}", tf_config)
            for index, tf_config in enumerate(tf_configs)]


def _output(process):
    with open(process.log) as handle:
        return handle.read()


def _wait(processes):
    """The exit codes of `processes`; all are killed if any outlasts DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    try:
        return [process.wait(max(0.1, deadline - time.monotonic()))
                for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail("the cluster did not finish in time:\n"
                    + "\n".join(_output(process)[-2000:] for process in processes))


def _run_folders(out_dir):
    return sorted(glob.glob(os.path.join(out_dir, "*", "config.json")))


def _history(out_dir):
    """The losses of the one run folder under out_dir, epoch by epoch."""
    folders = _run_folders(out_dir)
    assert len(folders) == 1, folders
    with open(os.path.join(os.path.dirname(folders[0]), "history.csv")) as handle:
        return [(float(row["loss"]), float(row["val_loss"]))
                for row in csv.DictReader(handle)]


def _assert_same_losses(history, reference, epochs):
    assert len(history) == len(reference) == epochs
    for epoch, (ours, theirs) in enumerate(zip(history, reference)):
        for a, b in zip(ours, theirs):
            assert abs(a - b) <= 1e-3 * abs(b), (epoch, history, reference)


def _assert_only_the_chief_keeps_a_run(root):
    chief = _run_folders(root / "w0")
    assert len(chief) == 1
    for name in ("model.keras", "model.weights.h5", "history.csv", "evaluation.json",
                 "metrics.json"):
        assert os.path.isfile(os.path.join(os.path.dirname(chief[0]), name)), name
    # The other worker's folder (checkpoint, backup) is gone, and nothing else is there.
    assert not os.path.exists(root / "w1") or os.listdir(root / "w1") == []


def test_two_worker_processes_train_an_in_batch_loss_as_one_process(tmp_path):
    argv = _flags({**SETTINGS, **TRIPLET})
    processes = _start_cluster(tmp_path, argv, distribute.local_tf_configs(2))
    processes.append(_start(argv, tmp_path / "single"))
    assert _wait(processes) == [0, 0, 0], [_output(p)[-2000:] for p in processes]
    assert "2 replicas share each batch of 32" in _output(processes[0])
    assert "the chief holds the run folder" in _output(processes[1])
    _assert_same_losses(_history(tmp_path / "w0"), _history(tmp_path / "single"),
                        SETTINGS["epochs"])
    _assert_only_the_chief_keeps_a_run(tmp_path)


def _backup_epoch(pattern):
    """The epoch of the BackupAndRestore backup that `pattern` finds, or -1."""
    found = glob.glob(os.path.join(pattern, "backup", "training_metadata.json"))
    try:
        with open(found[0]) as handle:
            return json.load(handle)["epoch"]
    except (IndexError, OSError, ValueError):  # not yet written, or being written
        return -1


def _when(condition, what):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_killed_worker_started_again_resumes_the_cluster(tmp_path):
    """Pair batches; the resumed run's losses are those of one uninterrupted process."""
    epochs = 3
    argv = _flags(dict(SETTINGS, epochs=epochs))
    tf_configs = distribute.local_tf_configs(2)
    reference = _start(argv, tmp_path / "single")
    chief, worker = _start_cluster(tmp_path, argv, tf_configs)
    chief_backup = str(tmp_path / "w0" / "*")
    worker_backup = str(tmp_path / "w1" / ".worker-1")
    _when(lambda: _backup_epoch(worker_backup) >= 1, "worker 1's first backup")
    # Paused, worker 1 finishes no epoch more, so neither can the chief: the two
    # backups then hold the same epoch when worker 1 is killed.
    worker.send_signal(signal.SIGSTOP)
    finished = _backup_epoch(worker_backup)
    assert 1 <= finished < epochs
    _when(lambda: _backup_epoch(chief_backup) == finished, "the chief's backup")
    worker.kill()
    assert _wait([chief, worker])[0] == 2  # the chief stops by itself
    assert "a worker of the cluster stopped" in _output(chief)
    run_dir = os.path.dirname(_run_folders(tmp_path / "w0")[0])

    # What the user types: the chief --resume=RUN, the other worker its own command.
    again = [_start([f"--resume={run_dir}"], tmp_path / "w0", tf_configs[0]),
             _start(argv + CLUSTER, tmp_path / "w1", tf_configs[1])]
    assert _wait(again + [reference]) == [0, 0, 0], [_output(p)[-2000:] for p in again]
    assert f"after epoch {finished}" in _output(again[1])
    _assert_same_losses(_history(tmp_path / "w0"), _history(tmp_path / "single"),
                        epochs)
    _assert_only_the_chief_keeps_a_run(tmp_path)
