"""Time to accuracy on unseen people: the AT&T tutorial's recipe against this project's.

    python benchmarks/time_to_accuracy.py [--data_dir=../shared/data] [--target=0.80]
                                          [--out=benchmarks/time_to_accuracy.json]

Trains, one after the other on the same split of AT&T faces (split="classes", seed
1337: 22 training, 8 validation and 10 test people), the AT&T tutorial's recipe
(`att_faces` preset on that split) and the `att_faces_oneshot` recipe, and records
after every epoch the wall seconds since the training started and `val_oneshot`, the
N-way one-shot accuracy on the validation people (8-way, 400 fixed tasks). It prints,
for each recipe, the seconds until val_oneshot first reaches --target, and the ratio.
Without the AT&T faces it says so and stops. Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import callbacks  # noqa: E402
import train  # noqa: E402
from configurator import get_config  # noqa: E402

RECIPES = {
    "AT&T tutorial (att_faces)": dict(dataset="att_faces", split="classes", epochs=40,
                                      patience=0, monitor="val_oneshot"),
    "ours (att_faces_oneshot)": dict(dataset="att_faces_oneshot", epochs=40, patience=0),
}


def timed_training(config, target):
    """Train until val_oneshot >= target (or config epochs); returns per-epoch
    (seconds, val_oneshot) and the seconds to the target (None if never reached)."""
    timeline = []
    started = time.perf_counter()
    original = callbacks.SaveProgress.on_epoch_end

    def record(progress, epoch, logs=None):
        original(progress, epoch, logs)
        timeline.append((round(time.perf_counter() - started, 1),
                         float(logs["val_oneshot"])))
        if logs["val_oneshot"] >= target:
            progress.model.stop_training = True

    callbacks.SaveProgress.on_epoch_end = record
    try:
        train.train(config)
    finally:
        callbacks.SaveProgress.on_epoch_end = original
    reached = next((seconds for seconds, accuracy in timeline if accuracy >= target), None)
    return timeline, reached


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--out", default=os.path.join("benchmarks",
                                                      "time_to_accuracy.json"))
    args = parser.parse_args(argv)
    faces = os.path.join(args.data_dir, "att_faces")
    if not os.path.isdir(faces):
        print(f"no AT&T faces in {faces}: pass --data_dir=FOLDER holding att_faces/")
        return 2
    results = {"target_val_oneshot": args.target, "recipes": {}}
    with tempfile.TemporaryDirectory() as out_dir:
        for name, settings in RECIPES.items():
            config = get_config(data_dir=faces, out_dir=out_dir, **settings)
            timeline, reached = timed_training(config, args.target)
            results["recipes"][name] = {"seconds_to_target": reached,
                                        "timeline": timeline}
    print(f"\nseconds until validation one-shot (8 unseen people) >= {args.target}:")
    for name, result in results["recipes"].items():
        seconds = result["seconds_to_target"]
        best = max(accuracy for _, accuracy in result["timeline"])
        print(f"  {name:26s} {'not reached' if seconds is None else f'{seconds:.0f} s'}"
              f" (best {best:.4f} in {len(result['timeline'])} epochs)")
    tutorial, ours = (r["seconds_to_target"] for r in results["recipes"].values())
    if tutorial and ours:
        results["ours_over_tutorial"] = round(ours / tutorial, 3)
        print(f"  ours / AT&T tutorial: {results['ours_over_tutorial']:.2f}x the time")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
