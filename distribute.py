"""Training on several devices or machines: the tf.distribute strategy, the cluster that
TF_CONFIG describes, and which process writes the run folder.

In a cluster (distribute="multi_worker") every worker runs the same training and the
same evaluation (both are collective: each step and each prediction spans the
workers), but only the chief writes the run folder. Every other worker writes what
Keras needs (checkpoint, backup, history) into a folder of its own,
out_dir/.<type>-<index>, which it removes when training ends and keeps when the
cluster stops early, so that the same command resumes it from its backup.
"""
import json
import os
import shutil
import socket

import tf_setup  # noqa: F401  (quiet TensorFlow before it loads)
import tensorflow as tf

TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy runs
TF_CONFIG_EXAMPLE = ('\'{"cluster":{"worker":["host1:23456","host2:23456"]},'
                     '"task":{"type":"worker","index":0}}\'')


class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy as Keras 3's fit() calls it.

    fit() asks the strategy to reduce a whole nested batch at once (only to learn its
    shapes) and the per-replica scalars it logs along axis 0; across workers the
    strategy's reduce takes neither (keras-team/keras#20585). Here a nest is reduced
    leaf by leaf, and a scalar across the replicas, as MirroredStrategy does.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def one(leaf):
            scalar = self.experimental_local_results(leaf)[0].shape.rank == 0
            return parent.reduce(reduce_op, leaf, None if scalar else axis)
        return tf.nest.map_structure(one, value)


def cluster_task(environ=None):
    """(cluster, task type, task index) of the TF_CONFIG environment variable, checked:
    ValueError in one line naming what is wrong and how to write it."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        raise ValueError(f"TF_CONFIG is not set, and --distribute=multi_worker needs it "
                         f"on every worker: set TF_CONFIG={TF_CONFIG_EXAMPLE} (index 1 "
                         f"on the second worker)")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error.msg} at character "
                         f"{error.pos}): write it as {TF_CONFIG_EXAMPLE}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no \"cluster\" listing the workers' host:port: "
                         f"write it as {TF_CONFIG_EXAMPLE}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no \"task\" with a \"type\" and an \"index\" "
                         f"saying which worker this is: write it as {TF_CONFIG_EXAMPLE}")
    others = sorted(set(cluster) - set(TASK_TYPES))
    if others:
        raise ValueError(f"TF_CONFIG's cluster has {', '.join(map(repr, others))} tasks, "
                         f"but MultiWorkerMirroredStrategy runs only 'chief' and "
                         f"'worker' tasks: list every process under \"worker\"")
    addresses = []
    for kind, hosts in cluster.items():
        if (not isinstance(hosts, list) or not hosts
                or not all(isinstance(host, str) and ":" in host for host in hosts)):
            raise ValueError(f"TF_CONFIG's cluster lists {kind!r} tasks as {hosts!r}, not "
                             f"as a list of \"host:port\" strings: write it as "
                             f"{TF_CONFIG_EXAMPLE}")
        addresses += hosts
    twice = sorted({host for host in addresses if addresses.count(host) > 1})
    if twice:
        raise ValueError(f"TF_CONFIG's cluster lists {', '.join(twice)} more than once: "
                         f"give every worker a host:port of its own")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError("TF_CONFIG's cluster lists more than one 'chief': list one, or "
                         "none (worker 0 is then the chief)")
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG's task type {kind!r} is not in its cluster, which "
                         f"has {', '.join(map(repr, cluster))}: use one of those")
    count = len(cluster[kind])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(f"TF_CONFIG's task index {index!r} is out of range: its cluster "
                         f"lists {count} {kind!r} task(s), so give an index from 0 to "
                         f"{count - 1}, a different one on each")
    return cluster, kind, index


def in_cluster(config):
    """True when this process is one worker of a multi-worker cluster."""
    return config["distribute"] == "multi_worker"


def is_chief(config, environ=None):
    """True unless this process is a worker of a cluster other than its chief (the
    "chief" task, or worker 0 when TF_CONFIG names no chief)."""
    if not in_cluster(config):
        return True
    cluster, kind, index = cluster_task(environ)
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def worker_dir(config, environ=None):
    """The folder of its own where a worker other than the chief trains, or "" for the
    chief and for a single process."""
    if is_chief(config, environ):
        return ""
    _, kind, index = cluster_task(environ)
    return os.path.join(config["out_dir"], f".{kind}-{index}")


def own_run(config, environ=None):
    """`config` as this process trains it: a worker other than the chief resumes its
    own folder when that holds a backup (the cluster stopped early); --resume=RUN is
    for the chief, whose run folder that is."""
    folder = worker_dir(config, environ)
    if not folder:
        return config
    if config["resume"]:
        raise ValueError(f"--resume continues the chief's run folder, and TF_CONFIG makes "
                         f"this process a worker other than the chief: start it with the "
                         f"command it was first started with (it resumes from its own "
                         f"backup in {folder})")
    if os.path.isdir(os.path.join(folder, "backup")):
        return dict(config, resume=folder)
    return config


def new_worker_dir(config):
    """For a worker other than the chief, its folder, emptied of a first epoch that
    never finished; "" for the chief and for a single process."""
    folder = worker_dir(config)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    return folder


def check_same_epoch(strategy, config, done):
    """Raise ValueError unless every worker of the cluster resumes after the same epoch
    (`done` here): a worker restarted with a different command, or a folder left by an
    abandoned run, would otherwise train other steps than the rest."""
    if not in_cluster(config):
        return
    gather = tf.function(lambda: strategy.gather(
        strategy.run(lambda: tf.constant([done])), axis=0))  # collectives run in graphs
    epochs = [int(epoch) for epoch in gather().numpy()]
    if len(set(epochs)) > 1:
        folders = os.path.join(config["out_dir"], ".worker-N")
        raise ValueError(
            f"the workers would resume after different epochs ({epochs}, in task order): "
            f"restart the chief with python train.py --resume=RUN (its run folder) and "
            f"every other worker with the command it was started with; or, to start "
            f"afresh, delete the other workers' {folders}")


def finish(run_dir, config):
    """After a finished training: a worker other than the chief removes its folder and
    says where the run is. True when this process holds the run folder."""
    if run_dir != worker_dir(config):
        return True
    shutil.rmtree(run_dir, ignore_errors=True)
    print("training finished: the chief holds the run folder")
    return False


def local_tf_configs(workers):
    """TF_CONFIG values for a cluster of `workers` processes on this machine, at
    127.0.0.1 ports that the system found free (for tests and benchmarks)."""
    sockets = [socket.socket() for _ in range(workers)]
    for each in sockets:  # all bound at once, so that no port comes twice
        each.bind(("127.0.0.1", 0))
    hosts = [f"127.0.0.1:{each.getsockname()[1]}" for each in sockets]
    for each in sockets:
        each.close()
    return [json.dumps({"cluster": {"worker": hosts},
                        "task": {"type": "worker", "index": index}})
            for index in range(workers)]


def make_strategy(name):
    """The tf.distribute strategy for config["distribute"].

    "mirrored": one replica per local GPU (or per logical device), gradients all-reduced;
    "multi_worker": the same across the machines that the TF_CONFIG environment
    variable lists (start this script on every machine), checked before TensorFlow
    reads it. Keras' fit() splits each global batch of batch_size between the replicas.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        cluster_task()
        return KerasMultiWorkerStrategy()
    return tf.distribute.get_strategy()  # the default: this process's one device


def continue_command(config, run_dir, environ=None):
    """How to continue an interrupted training: python train.py --resume=RUN, or on a
    worker of a cluster other than its chief, the command it was started with."""
    if is_chief(config, environ):
        return f"python train.py --resume={run_dir}"
    return ("the command this worker was started with, the chief with python train.py "
            "--resume=RUN")


def restart_hint(error):
    """What to do after `error`, when it says the cluster lost a worker; else ""."""
    if not isinstance(error, tf.errors.UnavailableError):
        return ""
    return (" -- a worker of the cluster stopped, so every worker stops: start each "
            "again, the chief with python train.py --resume=RUN (the folder it writes "
            "to) and every other worker with the command it was started with")
