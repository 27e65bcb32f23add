"""Scaling of distribute="multi_worker" on one machine: one worker on one core against
two worker processes with one core each, training with the same global batch.

    python benchmarks/distribute.py [--dataset=omniglot_mini] [--batch_size=128]
                                    [--steps=60] [--warmup=10]
                                    [--out=benchmarks/distribute.json]

Each process is pinned to its core with os.sched_setaffinity (what `taskset -c CORE`
does) and runs TensorFlow with one intra-op and one inter-op thread, so the two
workers do not share a core. Each fits the preset's network and recipe (training data
only, no validation, no evaluation) for --steps steps; a step's time is the median
time between the ends of consecutive steps after --warmup steps. The two workers talk
over 127.0.0.1 as a cluster of two machines would over their network.

It reports images embedded per second, the efficiency (two workers' rate over twice
one worker's), and the all-reduce a step needs alone: the median time to sum, across
the two workers, one tensor as large as the network's gradients. Run it on an
otherwise idle machine: any other load moves every figure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Nothing heavy here: a worker process pins itself to its core before anything
# starts threads (numpy's, TensorFlow's), which then stay on that core.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PINNING = "os.sched_setaffinity (as taskset -c CORE), 1 intra-op + 1 inter-op thread"
TIMEOUT = 1800  # seconds one measurement may take


def measure(cell):
    """In a worker process: train cell's recipe for its steps, pinned to its core;
    {"step_s", "images_per_step", "parameters", "allreduce_s"}."""
    os.sched_setaffinity(0, {cell["core"]})
    os.environ["SIAMESE_INTER_OP_THREADS"] = "1"
    import numpy as np
    import tf_setup  # noqa: F401
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras
    import distribute
    import prepare_data
    import siamese_network_funcs
    import train
    from configurator import get_config

    config = get_config(dataset=cell["dataset"], batch_size=cell["batch_size"],
                        distribute=cell["distribute"], out_dir=tempfile.gettempdir())
    keras.utils.set_random_seed(config["seed"])
    imageset = prepare_data.load_dataset(config)
    splits = prepare_data.build_splits(imageset, config)
    strategy = distribute.make_strategy(config["distribute"])
    with strategy.scope():
        model, base = siamese_network_funcs.build_network(config,
                                                          imageset.images.shape[1:])
        network, data, _, _ = train.training_setup(config, imageset, splits, model, base)
    inputs = next(iter(data))[0]
    images = sum(int(x.shape[0]) for x in tf.nest.flatten(inputs))  # the global batch

    ends = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    network.fit(data, epochs=1, steps_per_epoch=cell["warmup"] + cell["steps"],
               callbacks=[timer], verbose=0)
    step_s = float(np.median(np.diff(ends[cell["warmup"]:])))

    parameters = int(sum(np.prod(v.shape) for v in network.trainable_variables))
    allreduce_s = None
    if config["distribute"] == "multi_worker":
        gradients = tf.zeros([parameters])
        summed = tf.function(lambda: strategy.run(
            lambda: tf.distribute.get_replica_context().all_reduce("sum", gradients)))
        times = []
        for _ in range(cell["warmup"] + cell["steps"]):
            started = time.perf_counter()
            summed()
            times.append(time.perf_counter() - started)
        allreduce_s = float(np.median(times[cell["warmup"]:]))
    return dict(step_s=step_s, images_per_step=images, parameters=parameters,
                allreduce_s=allreduce_s)


def run(settings, cores, distribute):
    """One measurement per core, as processes started together; their results."""
    from distribute import local_tf_configs

    processes = []
    for core, tf_config in zip(cores, local_tf_configs(len(cores))):
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        if distribute == "multi_worker":
            env["TF_CONFIG"] = tf_config
        cell = dict(settings, core=core, distribute=distribute)
        processes.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--cell=" + json.dumps(cell)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for each in processes:
                each.kill()
            sys.exit(f"error: a {distribute} measurement took over {TIMEOUT} s")
        if process.returncode != 0:
            last = (err.strip().splitlines() or ["no message"])[-1]
            sys.exit(f"error: a {distribute} worker failed: {last}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # a worker process's task
    parser.add_argument("--dataset", default="omniglot_mini")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/distribute.json")
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(measure(json.loads(args.cell))))
        return
    from speed_memory import cpu_model

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit(f"error: this process may use {len(cores)} core, and two workers with "
                 f"a core each need 2")
    settings = dict(dataset=args.dataset, batch_size=args.batch_size, steps=args.steps,
                    warmup=args.warmup)
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"{machine}; pinning: {PINNING}")
    print(f"{args.dataset} preset, batch_size={args.batch_size}, median of {args.steps} "
          f"steps after {args.warmup}")
    one, = run(settings, cores[:1], "none")
    two = run(settings, cores[:2], "multi_worker")
    images = one["images_per_step"]
    one_rate = images / one["step_s"]
    two_step = max(worker["step_s"] for worker in two)  # the slower sets the pace
    two_rate = images / two_step
    allreduce = max(worker["allreduce_s"] for worker in two)
    efficiency = two_rate / (2 * one_rate)
    print(f"1 worker, 1 core:              {one['step_s'] * 1000:7.1f} ms/step  "
          f"{one_rate:8.1f} images/s")
    print(f"2 workers, 1 core each:        {two_step * 1000:7.1f} ms/step  "
          f"{two_rate:8.1f} images/s  speed-up {two_rate / one_rate:.2f}x, "
          f"efficiency {efficiency:.0%}")
    print(f"all-reduce of the gradients alone ({one['parameters']:,} floats over "
          f"127.0.0.1): {allreduce * 1000:.1f} ms/step, "
          f"{allreduce / two_step:.0%} of a 2-worker step")
    results = dict(machine=machine, pinning=PINNING, settings=settings,
                   images_per_step=images, parameters=one["parameters"],
                   one_worker=dict(step_s=one["step_s"], images_per_s=one_rate),
                   two_workers=dict(step_s=two_step, images_per_s=two_rate,
                                    speedup=two_rate / one_rate, efficiency=efficiency,
                                    allreduce_s=allreduce),
                   measured=time.strftime("%Y-%m-%d"))
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
