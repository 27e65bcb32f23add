"""Base networks side by side on AT&T people never seen in training, from scratch.

    python benchmarks/backbones.py [--data_dir=../shared/data] [--epochs=10]
                                   [--architectures=faces,mobilenet_v3_small,resnet50]
                                   [--out=benchmarks/backbones.json]

Trains the att_faces_oneshot recipe (triplet loss in P x K batches, 22 training, 8
validation and 10 test people, seed 1337) once per architecture for the same --epochs,
each in a process of its own, with random initial weights (backbone_weights=""): this
measures what a keras.applications model costs against the project's conv stack, not
what ImageNet weights would bring. For each: parameters of the saved embedding network,
seconds per epoch, the process's peak RSS, and the kept epoch's one-shot accuracy among
the validation people (8-way) and the test people (10-way), 400 tasks each, with the
test's 95% Wilson interval.
Without the AT&T faces it says so and stops. Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_ARCHITECTURES = ("faces", "mobilenet_v3_small", "efficientnet_b0", "resnet50")


def cell(architecture, data_dir, epochs):
    """Train one architecture in this process; its figures as a dict."""
    import runs
    import train
    from configurator import get_config

    with tempfile.TemporaryDirectory() as out_dir:
        config = get_config(dataset="att_faces_oneshot", data_dir=data_dir,
                            architecture=architecture, epochs=epochs, patience=0,
                            out_dir=out_dir)
        started = time.perf_counter()
        run_dir = train.train(config)
        seconds = time.perf_counter() - started
        evaluation = runs.read_json(os.path.join(run_dir, "evaluation.json"))
        recorded = runs.read_json(os.path.join(run_dir, "metrics.json"))
        _, base = runs.load_models(run_dir)
    return {"architecture": architecture, "parameters": int(base.count_params()),
            "epochs": recorded["epochs_run"], "wall_s": seconds,
            "train_s_per_epoch": recorded["train_seconds"] / recorded["epochs_run"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "val_oneshot": evaluation["val_oneshot_accuracy"],
            "val_trials": evaluation["val_trials"], "val_ways": evaluation["val_ways"],
            "test_oneshot": evaluation["oneshot_accuracy"],
            "test_oneshot_ci": evaluation["oneshot_accuracy_ci"],
            "ways": evaluation["ways"], "trials": evaluation["trials"],
            "pixel_nn_oneshot": evaluation["pixel_nn_oneshot_accuracy"]}


def cpu_model():
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--architectures", default=",".join(DEFAULT_ARCHITECTURES))
    parser.add_argument("--out", default=os.path.join("benchmarks", "backbones.json"))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    faces = os.path.join(args.data_dir, "att_faces")
    if args.cell:
        print(json.dumps(cell(args.cell, faces, args.epochs)))
        return 0
    if not os.path.isdir(faces):
        print(f"the AT&T faces are not at {faces}: set --data_dir to the folder that "
              f"holds att_faces/")
        return 2
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"{machine}; att_faces_oneshot recipe, {args.epochs} epochs, random initial "
          f"weights")
    print(f"{'architecture':20s} {'parameters':>11s} {'s/epoch':>8s} {'peak RSS':>9s} "
          f"{'validation':>11s} {'test (95% CI)':>26s}")
    results = []
    for architecture in args.architectures.split(","):
        done = subprocess.run([sys.executable, os.path.abspath(__file__),
                               f"--cell={architecture}", f"--data_dir={args.data_dir}",
                               f"--epochs={args.epochs}"], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"{architecture:20s} failed: {last}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(row)
        low, high = row["test_oneshot_ci"]
        print(f"{architecture:20s} {row['parameters']:11,d} "
              f"{row['train_s_per_epoch']:8.1f} {row['peak_rss_mb']:7,.0f}MB "
              f"{row['val_oneshot']:11.4f} {row['test_oneshot']:10.4f} "
              f"({low:.4f}-{high:.4f})")
    if results:
        print(f"test: {results[0]['ways']}-way; pixel nearest neighbour on the test "
              f"people {results[0]['pixel_nn_oneshot']:.4f}; chance "
              f"{1 / results[0]['ways']:.4f}")
    with open(args.out, "w") as handle:
        json.dump({"machine": machine, "epochs": args.epochs, "results": results},
                  handle, indent=2)
        handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
