"""Speed and memory: the source write-ups' float64 pair array vs this project's pipeline.

    python benchmarks/speed_memory.py [--quick] [--data_dir=../shared/data]
                                      [--out=benchmarks/results.json]

1. Training, side by side: same model, same pairs, batch 128, contrastive loss.
   - write-ups: the source write-ups' way, as in the AT&T tutorial. Every pair's pixels
     go into one float64 array of the tutorial's shape (pairs, 2, 1, H, W), viewed
     channels-last for Keras 3 (kept float64 as in the tutorial: fit() casts it to
     float32 itself), then model.fit([x[:, 0], x[:, 1]], y).
   - ours: prepare_data.pair_dataset, which gathers each batch's pixels from one uint8
     array of the images.
   Each (approach, size, pairs) cell runs in a Python process of its own, because peak
   RSS only grows within a process. It reports training pairs/s over --steps steps
   after one warm-up step, and the peak RSS (getrusage ru_maxrss) at the end.
   Write-ups cells whose estimated peak RSS is above --max_gb (12 GB), or above the
   memory available, are not run.
2. Embedding: images/s of metrics.embed for the att_faces base (56x46) and the omniglot
   base (52x52), and the wall time of 400 20-way one-shot trials on the Omniglot
   background set (draw the trials, embed the images they need, score).
3. Machine: CPUs, memory, TensorFlow and Keras versions, oneDNN and threads.

Images come from <data_dir>/att_faces and <data_dir>/omniglot/images_background.
Where they are missing, scikit-learn's digits are resized instead (the output says so).
The networks are untrained: only time and memory matter here.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import backbones  # noqa: E402
import metrics  # noqa: E402
import prepare_data  # noqa: E402
import runs  # noqa: E402
import samplers  # noqa: E402

# TensorFlow is imported only inside the cell processes (train_cell, embed_cell): a child
# process starts with its parent's peak RSS in ru_maxrss, so the parent must stay small.

SIZES = {"56x46": ("att_faces", (56, 46)), "112x112": ("plantvillage", (112, 112))}
EMBED_SHAPES = {"att_faces": (56, 46), "omniglot": (52, 52)}
SEED = 1337
GB = 2 ** 30
# Estimated peak RSS of a write-ups cell: TensorFlow and the model, plus FIT_COPIES
# times the float64 pair array (the array itself, fit()'s float32 copy of it, and
# TensorFlow's copy of that). It is within 5% of the 2.5 and 10.0 GB measured for 20,000
# pairs at 56x46 and 112x112 (benchmarks/results.json); it is low for small arrays at
# 112x112, where the model's activations alone take ~1.4 GB.
BASE_GB, FIT_COPIES = 0.7, 2.5
# --quick: tiny sizes for a smoke test of a few seconds per cell.
QUICK = dict(pairs=[2000], steps=3, embed_images=512, trials=40, per_class=2)


# --- images ------------------------------------------------------------------------

def resized_digits(shape):
    """scikit-learn's 8x8 digits resized to `shape`: the fallback when a dataset is
    missing."""
    digits = prepare_data.load_digits()
    height, width = shape
    images = [Image.fromarray(image[:, :, 0]).resize((width, height),
                                                     Image.Resampling.BILINEAR)
              for image in digits.images]
    return replace(digits, images=np.stack([np.asarray(i) for i in images])[..., None])


def load_faces(data_dir, shape):
    """(ImageSet, source): the AT&T faces at `shape`, else digits resized.

    Every 2nd pixel of the faces resized to twice `shape`, so 56x46 is the files' own
    112x92 (nothing resized) and 112x112 is the same faces resized to 224x224.
    """
    folder = os.path.join(data_dir, "att_faces")
    if not os.path.isdir(folder):
        return resized_digits(shape), f"FALLBACK: digits resized ({folder} not found)"
    height, width = shape
    faces = prepare_data.load_folder(folder, image_size=(2 * height, 2 * width),
                                     downsample=2)
    return faces, f"AT&T faces from {folder}"


def load_omniglot(data_dir, per_class):
    """(ImageSet, source): Omniglot's background set at 52x52 (`per_class` images of
    each character, 0 = all), else digits resized."""
    folder = os.path.join(data_dir, "omniglot", "images_background")
    if not os.path.isdir(folder):
        return (resized_digits(EMBED_SHAPES["omniglot"]),
                f"FALLBACK: digits resized ({folder} not found)")
    omniglot = prepare_data.load_folder(folder, image_size=EMBED_SHAPES["omniglot"],
                                        max_images_per_class=per_class)
    return omniglot, f"Omniglot background from {folder}"


def writeups_pair_array(images, pairs):
    """The AT&T tutorial's training data: every pair's pixels in one float64 array of
    the tutorial's shape (pairs, 2, 1, H, W).

    Returned as the channels-last view (pairs, 2, H, W, 1) that Keras 3 wants: with one
    channel this copies nothing. Values stay in [0, 255] as the shared model rescales
    them (the tutorial divides by 255 here, one more temporary copy not counted).
    """
    x = np.zeros((len(pairs), 2, 1) + images.shape[1:3], dtype=np.float64)
    for side in (0, 1):
        x[:, side, 0] = images[pairs[:, side], :, :, 0]
    return x.transpose(0, 1, 3, 4, 2)


# --- measurements, each in its own process ------------------------------------------

def tf_facts():
    """TensorFlow and Keras as this process runs them (after tf_setup)."""
    import tensorflow as tf
    import keras
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def train_cell(cell):
    """Train one (approach, size, pairs) cell in this process: pairs/s over
    cell["steps"] steps after one warm-up step, and this process's peak RSS."""
    import tf_setup  # noqa: F401  (first, as train.py does: quiet TF, oneDNN on)
    import keras
    import configurator
    import siamese_network_funcs

    architecture, shape = SIZES[cell["size"]]
    keras.utils.set_random_seed(SEED)
    imageset, source = load_faces(cell["data_dir"], shape)
    everyone = np.arange(len(imageset.class_names))
    half = cell["pairs"] // 2
    pairs, y = prepare_data.make_pairs(imageset.labels, everyone, half, half,
                                       np.random.default_rng(SEED))
    config = configurator.get_config(dataset=architecture,
                                     batch_size=cell["batch_size"])
    model, _ = siamese_network_funcs.build_siamese_model(imageset.images.shape[1:],
                                                         architecture)
    siamese_network_funcs.compile_network(config, model, None)

    started = time.perf_counter()
    if cell["approach"] == "write-ups":
        x = writeups_pair_array(imageset.images, pairs)
        data = dict(x=[x[:, 0], x[:, 1]], y=y, batch_size=config["batch_size"])
    else:
        data = dict(x=prepare_data.pair_dataset(imageset.images, pairs, y,
                                                config["batch_size"], shuffle=True,
                                                seed=SEED),
                    shuffle=False)
    prepared = time.perf_counter()
    step_ends = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: step_ends.append(time.perf_counter()))
    model.fit(**data, epochs=1, steps_per_epoch=cell["steps"] + 1, callbacks=[timer],
              verbose=0)
    timed = np.diff(step_ends)  # the steps after the first (tracing, first batch)
    return {"source": source, "images": len(imageset.images),
            "classes": len(imageset.class_names),
            "prep_s": prepared - started, "first_step_s": step_ends[0] - prepared,
            "pairs_per_s": cell["batch_size"] * len(timed) / float(np.sum(timed)),
            "median_step_pairs_per_s": cell["batch_size"] / float(np.median(timed)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tf": tf_facts()}


def embed_throughput(base, images, n_images, repeats=3):
    """images/s of metrics.embed on `n_images` images (the set repeated to that many):
    median of `repeats` timed calls after one warm-up call."""
    batch = np.resize(images, (n_images,) + images.shape[1:])
    metrics.embed(base, batch)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics.embed(base, batch)
        seconds.append(time.perf_counter() - start)
    return {"images": n_images, "images_per_s": n_images / statistics.median(seconds),
            "seconds": seconds}


def time_oneshot(base, imageset, ways, trials):
    """Wall time of `trials` N-way one-shot tasks, within each parent folder (Koch's
    within-alphabet protocol): draw them, embed each image they need once, score."""
    ways = min(ways, len(imageset.class_names))
    everyone = np.arange(len(imageset.class_names))
    started = time.perf_counter()
    queries, candidates, answers = samplers.make_oneshot_trials(
        imageset.labels, everyone, ways, trials, np.random.default_rng(SEED),
        imageset.groups)
    drawn = time.perf_counter()
    needed = np.unique(np.concatenate([queries, candidates.ravel()]))
    embeddings = metrics.embed(base, imageset.images[needed])
    embedded = time.perf_counter()
    accuracy = metrics.oneshot_accuracy(embeddings, np.searchsorted(needed, queries),
                                        np.searchsorted(needed, candidates), answers)
    scored = time.perf_counter()
    return {"trials": trials, "ways": ways, "images_embedded": len(needed),
            "within_groups": len(set(imageset.groups)) > 1,
            "seconds": scored - started, "draw_s": drawn - started,
            "embed_s": embedded - drawn, "score_s": scored - embedded,
            "accuracy_untrained": accuracy}


def embed_cell(cell):
    """Embedding throughput of the att_faces and omniglot bases, then the one-shot
    trials with the omniglot base (its predict function already built by the throughput
    runs)."""
    import tf_setup  # noqa: F401  (first, as train.py does: quiet TF, oneDNN on)
    import keras
    import siamese_network_funcs

    keras.utils.set_random_seed(SEED)
    started = time.perf_counter()
    omniglot, omniglot_source = load_omniglot(cell["data_dir"], cell["per_class"])
    load_s = time.perf_counter() - started
    faces, faces_source = load_faces(cell["data_dir"], EMBED_SHAPES["att_faces"])
    result, bases = {}, {}
    for name, imageset, source in (("att_faces", faces, faces_source),
                                   ("omniglot", omniglot, omniglot_source)):
        bases[name] = backbones.build_conv_stack(
            imageset.images.shape[1:], **backbones.BACKBONES[name])
        result[name] = dict(embed_throughput(bases[name], imageset.images,
                                             cell["embed_images"]),
                            source=source, shape="x".join(map(str, EMBED_SHAPES[name])))
    result["oneshot"] = dict(time_oneshot(bases["omniglot"], omniglot, cell["ways"],
                                          cell["trials"]),
                             source=omniglot_source, load_s=load_s,
                             images=len(omniglot.images),
                             classes=len(omniglot.class_names))
    result["tf"] = tf_facts()
    return result


def run_cell(cell):
    """Run `cell` in a fresh Python process: its result dict, or {"error": ...}."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__),
                           "--cell=" + json.dumps(cell)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        killed = " (killed: out of memory?)" if done.returncode == -9 else ""
        return {"error": f"exit status {done.returncode}{killed}: {last}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]),
                wall_s=time.perf_counter() - started)


# --- the report -----------------------------------------------------------------------

def meminfo_gb(key):
    """A /proc/meminfo value (MemTotal, MemAvailable) in GB."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / GB
    return float("nan")


def cpu_model():
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def writeups_need_gb(n_pairs, shape):
    """(float64 pair array, estimated peak RSS of its cell) in GB."""
    array_gb = n_pairs * 2 * shape[0] * shape[1] * 8 / GB
    return array_gb, BASE_GB + FIT_COPIES * array_gb


LEAD = "{:<8} {:<13} {:>8}  {:<14} "  # size, model, pairs, approach
ROW = LEAD + "{:>7} {:>11} {:>9} {:>12} {:>7}"


def run_or_skip(cell, need_gb, max_gb):
    """Run a cell, unless it is a write-ups cell whose estimated peak RSS is above
    `max_gb` or above the memory available now."""
    if cell["approach"] == "write-ups":
        available = meminfo_gb("MemAvailable")
        if need_gb > min(max_gb, available):
            why = (f"limit {max_gb:g} GB" if need_gb > max_gb
                   else f"only {available:.1f} GB available")
            return {"skipped": f"needs {need_gb:.1f} GB ({why})"}
    return run_cell(cell)


def table_row(lead, result):
    """One cell's line of the training table."""
    if "skipped" in result:
        return LEAD.format(*lead) + "skipped: " + result["skipped"]
    if "error" in result:
        return LEAD.format(*lead) + "failed: " + result["error"]
    return ROW.format(*lead, f"{result['prep_s']:.1f}", f"{result['first_step_s']:.1f}",
                      f"{result['pairs_per_s']:,.0f}", f"{result['peak_rss_mb']:,.0f}",
                      f"{result['wall_s']:.0f}")


def training(args):
    """Part 1: every (size, pairs, approach) cell, each printed as it finishes."""
    print("\n== 1. Training: write-ups (float64 pair array) vs ours (pair_dataset over "
          "uint8 images) ==")
    print(f"batch {args.batch_size}, contrastive loss, RMSprop; pairs/s over "
          f"{args.steps} steps after 1 warm-up step;\npeak RSS = ru_maxrss of each "
          f"cell's own process; the write-ups' array stays float64 (fit() casts it to "
          f"float32)")
    print(ROW.format("size", "model", "pairs", "approach", "prep s", "1st step s",
                     "pairs/s", "peak RSS MB", "wall s"))
    cells, comparisons, sources = [], [], {}
    for size, (architecture, shape) in SIZES.items():
        for n_pairs in args.pairs:
            array_gb, need_gb = writeups_need_gb(n_pairs, shape)
            runs_of = {"write-ups": [], "ours": []}
            # Alternate the two approaches --repeats times: the machine's speed drifts
            # by tens of percent between minutes, which one run of each cannot separate.
            for _ in range(args.repeats):
                for approach in ("write-ups", "ours"):
                    cell = dict(approach=approach, size=size, pairs=n_pairs,
                                steps=args.steps, batch_size=args.batch_size,
                                data_dir=args.data_dir)
                    result = run_or_skip(cell, need_gb, args.max_gb)
                    print(table_row((size, architecture, f"{n_pairs:,}", approach),
                                    result), flush=True)
                    if "pairs_per_s" in result:
                        runs_of[approach].append(result)
                        sources.setdefault(size, result["source"])
                    if approach == "write-ups":
                        result.update(array_gb=array_gb, estimated_peak_gb=need_gb)
                    cells.append(dict(cell, **result))
            if runs_of["ours"]:
                comparisons.append(compare(size, n_pairs, runs_of, need_gb))
    print("ours/write-ups: pairs/s above 1x = ours faster; peak RSS below 1x = ours "
          "smaller")
    for size, source in sources.items():
        print(f"images at {size}: {source}")
    return cells, comparisons


def compare(size, n_pairs, runs_of, need_gb):
    """ours / write-ups for one (size, pairs), printed under its rows: the median of
    the rounds' speed ratios (each round's two cells ran one after the other, so a drift
    of the machine's speed cancels out) and the largest peak RSS of each approach;
    against the write-ups' estimated peak RSS when their cells were not run."""
    ours, writeups = runs_of["ours"], runs_of["write-ups"]
    ours_rss = max(r["peak_rss_mb"] for r in ours)
    writeups_rss = (max(r["peak_rss_mb"] for r in writeups) if writeups
                    else need_gb * 1024)
    comparison = {"size": size, "pairs": n_pairs, "memory_ratio": ours_rss / writeups_rss,
                  "memory_vs": "measured" if writeups else "estimate"}
    speed = ""
    if writeups:
        rounds = [o["pairs_per_s"] / w["pairs_per_s"] for o, w in zip(ours, writeups)]
        comparison.update(speed_ratio=statistics.median(rounds), speed_ratio_rounds=rounds)
        speed = f"{comparison['speed_ratio']:.2f}x"
        if len(rounds) > 1:
            speed += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    memory = f"{comparison['memory_ratio']:.2f}x" + ("" if writeups else " of est.")
    print(ROW.format("", "", "", "ours/write-ups", "", "", "", memory, "").rstrip(),
          flush=True)
    if speed:
        print(f"{'':>48}pairs/s ours/write-ups, median of the rounds: {speed}", flush=True)
    return comparison


def embedding(args):
    """Part 2, in one process of its own."""
    print("\n== 2. Embedding (metrics.embed, batch 256) and one-shot scoring ==",
          flush=True)
    result = run_cell(dict(task="embed", data_dir=args.data_dir,
                           embed_images=args.embed_images, trials=args.trials,
                           ways=args.ways, per_class=args.per_class))
    if "error" in result:
        print("failed: " + result["error"])
        return result
    for name in EMBED_SHAPES:
        r = result[name]
        print(f"{name} base at {r['shape']}: {r['images_per_s']:,.0f} images/s "
              f"({r['images']:,} images, median of {len(r['seconds'])} calls; "
              f"{r['source']})")
    r = result["oneshot"]
    within = " within alphabets" if r["within_groups"] else ""
    print(f"one-shot: {r['trials']} {r['ways']}-way trials{within} in "
          f"{r['seconds']:.2f} s: draw {r['draw_s']:.2f} s, embed "
          f"{r['images_embedded']:,} images {r['embed_s']:.2f} s, score "
          f"{r['score_s']:.3f} s")
    print(f"  on {r['images']:,} images of {r['classes']} classes (loaded in "
          f"{r['load_s']:.1f} s; {r['source']}); accuracy {r['accuracy_untrained']:.3f} "
          f"with an untrained network (chance {1 / r['ways']:.3f})")
    return result


def machine(tf, load_at_start):
    """Part 3: this machine and how TensorFlow runs on it."""
    facts = {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
             "cpu": cpu_model(), "ram_gb": meminfo_gb("MemTotal"),
             "python": sys.version.split()[0], "load_average_start": load_at_start,
             "load_average_end": os.getloadavg(), **tf}
    print("\n== 3. Machine ==")
    print(f"CPUs: {facts['cpus']} ({facts['usable_cpus']} usable), {facts['cpu']}; "
          f"RAM {facts['ram_gb']:.1f} GB; Python {facts['python']}")
    if tf:
        print(f"TensorFlow {tf['tensorflow']}, Keras {tf['keras']} ({tf['backend']} "
              f"backend)")
        print(f"TF_ENABLE_ONEDNN_OPTS={tf['TF_ENABLE_ONEDNN_OPTS']} (tf_setup sets 1 "
              f"unless already set); inter-op threads {tf['inter_op_threads']}, intra-op "
              f"threads {tf['intra_op_threads']} (0 = TensorFlow's default)")
    print(f"load average (1, 5, 15 min) before the run: "
          f"{', '.join(f'{v:.2f}' for v in load_at_start)}")
    if load_at_start[0] > 0.5:
        print("  the CPUs were busy before this run started: speeds are lower than on a "
              "quiet machine; compare the ratios")
    return facts


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes for a smoke test: {QUICK}")
    parser.add_argument("--data_dir", default="../shared/data",
                        help="holds att_faces/ and omniglot/images_background/")
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--pairs", default=[20000, 100000],
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="pair counts, half genuine (default 20000,100000)")
    parser.add_argument("--steps", type=int, default=100,
                        help="timed training steps, after one warm-up step")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of (write-ups, ours) cells run one after the "
                             "other; the speed ratio is the median of the rounds' "
                             "ratios, the memory ratio uses the largest peak RSS")
    parser.add_argument("--max_gb", type=float, default=12.0,
                        help="skip write-ups cells whose estimated peak RSS is above "
                             "this")
    parser.add_argument("--embed_images", type=int, default=10000)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--per_class", type=int, default=0,
                        help="Omniglot images per character, 0 = all 20")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # a worker process's task
    args = parser.parse_args(argv)
    if args.quick:  # explicit options still win over the quick sizes
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    if min(args.pairs) // args.batch_size < args.steps + 1:
        parser.error(f"{min(args.pairs)} pairs make fewer than --steps + 1 = "
                     f"{args.steps + 1} batches of {args.batch_size}")
    return args


def main(argv):
    args = parse_args(argv)
    if args.cell:
        cell = json.loads(args.cell)
        result = embed_cell(cell) if cell.get("task") == "embed" else train_cell(cell)
        print(json.dumps(result))
        return 0
    started, load_at_start = time.time(), os.getloadavg()
    cells, comparisons = training(args)
    embedded = embedding(args)
    tf = next((c["tf"] for c in cells if "tf" in c), embedded.get("tf", {}))
    facts = machine(tf, load_at_start)
    settings = {k: v for k, v in vars(args).items() if k != "cell"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    runs.write_json(args.out,
                    {"settings": settings, "machine": facts, "training": cells,
                     "comparisons": comparisons, "embedding": embedded,
                     "wall_s": time.time() - started})
    print(f"\nwrote {args.out} ({time.time() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
