"""The on-disk image cache against images in memory: peak memory, start-up, speed.

    python benchmarks/image_cache.py [--quick] [--work=/tmp/siamese-image-cache]
                                     [--limit_gb=2] [--steps=20] [--speed_steps=100]
                                     [--only_speed] [--data_dir=../shared/data]
                                     [--out=benchmarks/image_cache.json]

1. Peak RSS against dataset bytes. Generated class folders (20 JPEG photos of 256x256
   per class, each class a smooth colour pattern of its own plus noise, trained at
   96x96 RGB = 27,648 bytes an image) of 1/8, 1/4, 1/2 and 1 times the largest,
   which is at least 1.5 x the memory limit. Each cell is a process of its own that
   loads the folder as train.py does, builds the folder preset's network and fits
   --steps training steps in P x K batches of 64 images; peak RSS is its getrusage
   ru_maxrss. Cells:
   - memory: image_cache=False, every image decoded into memory;
   - cache: image_cache=True, batches read from the cache files (the images never in
     memory at once);
   - the largest folder again for both, inside a memory cgroup (v1 or v2) limited to
     --limit_gb: the cache cell must finish within it, the memory cell is refused.
2. Start-up, to the first training step, of the largest folder: image_cache=False
   (decodes every run), first start with the cache (decodes, writes the cache) and
   second start (reads it).
3. Training speed, images per second over --speed_steps steps after 3 warm-up steps,
   on AT&T faces (att_faces_oneshot preset) and Omniglot's background set (omniglot
   preset): images in memory against batches read from the cache, in three rounds
   one after the other (the machine's speed drifts between minutes; the medians and
   the median of the rounds' ratios are reported), after a run that builds the cache.

Figures depend on the machine; compare them within one run. The cells run one after
another, never two at once.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from speed_memory import cpu_model  # noqa: E402
GB = 1e9
IMAGE_SIZE = (96, 96)
IMAGE_BYTES = IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3
BATCH = 64  # images per P x K batch of the generated folders
ROUNDS = 3  # of part 3
PER_CLASS = 20


def generate_class(task):
    """One class folder of PER_CLASS 256x256 JPEG photos."""
    from PIL import Image
    root, k = task
    folder = os.path.join(root, f"class{k:05d}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == PER_CLASS:
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(k)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    base = np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0, 3) * y
                                         + rng.uniform()))
                     for _ in range(3)], axis=-1) * 100 + 128
    for i in range(PER_CLASS):
        photo = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(os.path.join(folder, f"{i + 1}.jpg"), quality=90)


def make_folders(work, n_classes, fractions):
    """The largest folder of n_classes classes, and for each fraction a folder of
    links to its first classes. Returns {fraction: path}."""
    from multiprocessing import Pool
    full = os.path.join(work, "classes")
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(generate_class, [(full, k) for k in range(n_classes)], chunksize=16)
    folders = {}
    for fraction in fractions:
        folder = os.path.join(work, f"data-{fraction:g}")
        if not os.path.isdir(folder):
            os.makedirs(folder)
            for k in range(int(round(n_classes * fraction))):
                os.symlink(os.path.join(full, f"class{k:05d}"),
                           os.path.join(folder, f"class{k:05d}"))
        folders[fraction] = folder
    return folders


def cgroup_for(limit_bytes):
    """A memory cgroup limited to limit_bytes, as the file a process joins it by
    writing its pid to; None where none can be made (not root, no cgroup fs)."""
    with open("/proc/self/cgroup") as handle:
        lines = handle.read().splitlines()
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder, limit_file = "/sys/fs/cgroup/memory" + path, "memory.limit_in_bytes"
        elif hierarchy == "0":
            folder, limit_file = "/sys/fs/cgroup" + path, "memory.max"
        else:
            continue
        group = os.path.join(folder.rstrip("/"), "siamese-benchmark")
        try:
            os.makedirs(group, exist_ok=True)
            with open(os.path.join(group, limit_file), "w") as handle:
                handle.write(str(int(limit_bytes)))
            return os.path.join(group, "cgroup.procs")
        except OSError:
            return None
    return None


def cell(spec):
    """Run in a child process: load, build, fit spec["steps"] steps; what it measured."""
    started = time.time()
    if spec.get("cgroup"):
        with open(spec["cgroup"], "w") as handle:
            handle.write(str(os.getpid()))
    import resource

    import tf_setup  # noqa: F401
    import keras

    import siamese_network_funcs
    import train
    from configurator import get_config

    config = get_config(**spec["config"])
    keras.utils.set_random_seed(config["seed"])
    try:
        imageset, splits, _ = train.load_data(config)
    except ValueError as error:
        return dict(refused=str(error), seconds=time.time() - started)
    loaded = time.time()
    model, base = siamese_network_funcs.build_network(config, imageset.images.shape[1:])
    network, train_data, _, _ = train.training_setup(config, imageset, splits, model,
                                                     base)
    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            marks.append(time.time())

    warm_up, steps = 3, spec["steps"]
    network.fit(train_data, steps_per_epoch=warm_up + steps, epochs=1, verbose=0,
                callbacks=[Clock()])
    per_step = config["batch_size"] * (2 if config["pairing"] == "pairs" else 1)
    measured = time.time() - marks[warm_up]
    return dict(images=len(imageset.images), dataset_gb=imageset.images.nbytes / GB,
                stored=type(imageset.images).__name__, load_s=loaded - started,
                first_step_s=marks[0] - started,
                images_per_s=per_step * steps / measured,
                peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB)


def run_cell(spec):
    """cell(spec) in a fresh Python process (peak RSS is per process)."""
    done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return dict(failed=f"exit {done.returncode}: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(result):
    if "refused" in result:
        return f"refused in {result['seconds']:.1f} s: {result['refused'][:150]}..."
    if "failed" in result:
        return f"FAILED {result['failed']}"
    return (f"peak RSS {result['peak_rss_gb']:5.2f} GB, first step at "
            f"{result['first_step_s']:6.1f} s (loading {result['load_s']:6.1f} s), "
            f"{result['images_per_s']:7.1f} images/s, images {result['stored']}")


def folder_config(data_dir, cache_dir, cached, steps_total):
    return dict(dataset="folder", data_dir=data_dir, image_size=list(IMAGE_SIZE),
                image_cache=cached, cache_dir=cache_dir, epochs=1, batch_size=BATCH,
                total_sample_size=steps_total, augment=False)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--work", default="/tmp/siamese-image-cache",
                        help="where the generated folders and the caches go")
    parser.add_argument("--limit_gb", type=float, default=2.0,
                        help="the memory cgroup limit of the limited cells")
    parser.add_argument("--steps", type=int, default=20,
                        help="training steps timed in parts 1 and 2")
    parser.add_argument("--speed_steps", type=int, default=100,
                        help="training steps timed in part 3")
    parser.add_argument("--only_speed", action="store_true",
                        help="part 3 alone, its results replacing those in --out")
    parser.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks",
                                                      "image_cache.json"))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only_speed and not os.path.isfile(args.out):
        parser.error(f"--only_speed updates {args.out}, which is not there: run "
                     f"without --only_speed first")
    if args.cell:
        print(json.dumps(cell(json.loads(args.cell))))
        return 0

    caches = os.path.join(args.work, "caches")
    shutil.rmtree(caches, ignore_errors=True)
    if args.only_speed:
        with open(args.out) as handle:
            results = json.load(handle)
    else:
        results = dict(machine=cpu_model(), limit_gb=args.limit_gb)
        memory_and_startup(args, results, caches)
    speed(args, results, caches)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwritten: {args.out}")
    return 0


def memory_and_startup(args, results, caches):
    """Parts 1 and 2 into results, on generated folders."""
    limit = args.limit_gb * GB
    largest = int(0.02 * GB if args.quick else 1.5 * limit)
    n_classes = -(-largest // (IMAGE_BYTES * PER_CLASS))
    steps = 3 if args.quick else args.steps
    fractions = (0.125, 0.25, 0.5, 1.0)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; memory limit of the "
          f"limited cells {args.limit_gb:g} GB (a memory cgroup)")
    print(f"data: generated, {n_classes} classes x {PER_CLASS} JPEG photos 256x256, "
          f"trained at {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}x3; largest "
          f"{n_classes * PER_CLASS * IMAGE_BYTES / GB:.2f} GB decoded")
    started = time.time()
    folders = make_folders(args.work, n_classes, fractions)
    print(f"ready in {time.time() - started:.0f} s; folder preset (compact network, "
          f"triplet loss in P x K batches of {BATCH} images), augment off, {steps} "
          f"steps timed after 3")
    results.update(steps=steps, memory={}, cache={}, limited={}, startup={})
    config_steps = 4000  # pairs; an epoch is longer than the steps timed

    print("\n1. peak RSS against dataset bytes (no limit)")
    for fraction, folder in folders.items():
        for mode, cached in (("memory", False), ("cache", True)):
            spec = dict(config=folder_config(folder, caches, cached, config_steps),
                        steps=steps)
            result = results[mode][str(fraction)] = run_cell(spec)
            gb = fraction * n_classes * PER_CLASS * IMAGE_BYTES / GB
            print(f"  {gb:5.2f} GB {mode:6s} {describe(result)}")

    print(f"\n   the largest folder inside a {args.limit_gb:g} GB memory cgroup")
    group = cgroup_for(limit)
    if group is None:
        print("   no memory cgroup could be made (root and a cgroup filesystem needed)")
    for mode, cached in (("memory", False), ("cache", True)):
        if group is None:
            break
        spec = dict(config=folder_config(folders[1.0], caches, cached, config_steps),
                    steps=steps, cgroup=group)
        result = results["limited"][mode] = run_cell(spec)
        print(f"  {mode:6s} {describe(result)}")
    if group is not None:
        os.rmdir(os.path.dirname(group))

    print("\n2. start-up to the first training step, the largest folder")
    shutil.rmtree(caches, ignore_errors=True)
    for name, cached in (("no cache", False), ("first start", True),
                         ("second start", True)):
        spec = dict(config=folder_config(folders[1.0], caches, cached, config_steps),
                    steps=1)
        result = results["startup"][name] = run_cell(spec)
        print(f"  {name:13s} {describe(result)}")
    first, second = (results["startup"][name].get("first_step_s")
                     for name in ("first start", "second start"))
    if first and second:
        print(f"  second start {first / second:.1f}x faster to the first step")


def speed(args, results, caches):
    """Part 3 into results, on AT&T faces and Omniglot's background set: the cache
    built once, then ROUNDS rounds of memory and cache one after the other (the
    machine's speed drifts between minutes), medians reported."""
    steps = 3 if args.quick else args.speed_steps
    rounds = 1 if args.quick else ROUNDS
    print(f"\n3. training speed, images per second over {steps} steps after 3, on "
          f"{cpu_model()}, {os.cpu_count()} cores; {rounds} rounds, medians")
    results.update(speed_machine=cpu_model(), speed_steps=steps, speed_rounds=rounds,
                   speed={})
    real = {"AT&T faces": dict(dataset="att_faces_oneshot",
                               data_dir=os.path.join(args.data_dir, "att_faces")),
            "Omniglot background": dict(dataset="omniglot", data_dir=os.path.join(
                args.data_dir, "omniglot", "images_background"))}
    for name, settings in real.items():
        if not os.path.isdir(settings["data_dir"]):
            print(f"  {name}: not found at {settings['data_dir']}, skipped")
            continue

        def timed(mode, label):
            result = run_cell(dict(config=dict(settings, image_cache=mode == "cache",
                                               cache_dir=caches, epochs=1),
                                   steps=steps))
            print(f"  {name:19s} {label:15s} {describe(result)}", flush=True)
            return result

        cells = results["speed"][name] = {"building": timed("cache", "cache, building"),
                                          "memory": [], "cache": []}
        for _ in range(rounds):
            for mode in ("memory", "cache"):
                cells[mode].append(timed(mode, mode))
        rates = {mode: [result.get("images_per_s", float("nan"))
                        for result in cells[mode]] for mode in ("memory", "cache")}
        ratios = np.array(rates["cache"]) / np.array(rates["memory"])
        cells.update(median={mode: float(np.median(rates[mode])) for mode in rates},
                     cache_over_memory=float(np.median(ratios)))
        print(f"  {name:19s} median images/s: memory {cells['median']['memory']:.1f}, "
              f"cache {cells['median']['cache']:.1f}; cache / memory "
              f"{cells['cache_over_memory']:.2f}x (rounds {ratios.min():.2f}-"
              f"{ratios.max():.2f})", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
