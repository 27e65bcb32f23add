"""Identifying against large galleries: the per-class loop predict.py once ran, its
exhaustive vectorised search, and the faiss index of gallery_index.py.

    python benchmarks/identify.py [--quick]
                                  [--sizes=1000,10000,30000,100000,300000,1000000]
                                  [--dims=128] [--queries=1000]
                                  [--ef_sweep=128,256,512,1024]
                                  [--out=benchmarks/identify.json]

Embeddings are generated, not learned: a gallery of N images has N/10 classes whose
centres are drawn from N(0, I/D) (about 1.4 apart), and each image is its class's
centre (class drawn uniformly, so about 10 images per class) plus N(0, 0.25 I/D) noise
(an image lies about 0.5 from its centre, 0.7 from its classmates). A query is a new
image of a random class. Rows, per gallery size:
  - loop: for each query, for each class, mask the gallery and take the minimum
    distance; predict.py's search until its vectorised one. Run on a few queries
    only (--loop_max and the table say how many), as it takes seconds per query at
    100,000 images.
  - exact: predict.nearest_classes: the matrix product |q|^2 + |g|^2 - 2 q.g in
    chunks, then one grouped minimum per class.
  - index: gallery_index.build (its build time), then gallery_index.nearest_classes,
    with the queries it cannot settle searched exhaustively, as predict.py does; then
    again for each --ef_sweep value of efSearch (the candidates a search keeps), the
    trade of speed for recall that chose gallery_index.EF_SEARCH.
Each (method, size) cell runs in a Python process of its own that loads the gallery
from a .npy file; its peak memory is that process's VmHWM (peak resident set size,
/proc/self/status), gallery and Python included. Answers: the share of queries whose
top-k classes (order included) equal the exact search's. Recall@1 of the index:
image level, its nearest image (a k=1 search) is the exact nearest image; class
level, its best class is the exact best class.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from speed_memory import cpu_model, meminfo_gb  # noqa: E402

SEED = 1337
PER_CLASS = 10  # images per class, on average
NOISE = 0.5  # an image's distance from its class centre, about; centres lie ~1.4 apart
TOP_K = 3
QUICK = dict(sizes=[1000, 10000], queries=200)


def generate(n, dims, n_queries, seed=SEED):
    """(gallery (n, dims) float32, class per image, queries float32)."""
    rng = np.random.default_rng(seed)
    classes = max(1, n // PER_CLASS)
    centres = rng.standard_normal((classes, dims), dtype=np.float32) / np.sqrt(dims)
    labels = rng.integers(0, classes, n)
    scale = np.float32(NOISE / np.sqrt(dims))
    gallery = centres[labels] + scale * rng.standard_normal((n, dims), np.float32)
    queries = (centres[rng.integers(0, classes, n_queries)]
               + scale * rng.standard_normal((n_queries, dims), np.float32))
    return gallery, labels, queries


# --- cells, each in its own process ---------------------------------------------------

def status_mb(key):
    """A /proc/self/status size of this process in MB: VmRSS (resident now), VmHWM
    (its peak)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def loop_search(queries, gallery, owners, top_k):
    """Class indices of each query's top_k classes, the per-class loop's way."""
    import metrics
    owners = np.asarray(owners)
    names = list(dict.fromkeys(owners.tolist()))
    answers = []
    for query in queries:
        distances = metrics.EUCLIDEAN(gallery, query)
        per_class = [(c, float(distances[owners == name].min()))
                     for c, name in enumerate(names)]
        answers.append([c for c, _ in sorted(per_class, key=lambda item: item[1])
                        [:top_k]])
    return np.array(answers)


def exact_nearest_images(queries, gallery, chunk=64):
    """The exact nearest gallery image of each query (float64, untimed)."""
    gallery = gallery.astype(np.float64)
    norms = np.einsum("ij,ij->i", gallery, gallery)
    return np.concatenate([np.argmin(norms - 2 * queries[i:i + chunk] @ gallery.T,
                                     axis=1)
                           for i in range(0, len(queries), chunk)])


def run_in_this_process(cell):
    """One (method, size) cell: timings, peak memory and its answers, saved as .npy
    beside the data for the cells that compare with them."""
    import gallery_index
    import predict

    folder = cell["folder"]
    gallery = np.load(os.path.join(folder, "gallery.npy"))
    queries = np.load(os.path.join(folder, "queries.npy"))[:cell["queries"]]
    owners = np.load(os.path.join(folder, "owners.npy"))
    _, labels = predict.class_labels(owners)
    result = {"loaded_mb": status_mb("VmRSS")}
    started = time.perf_counter()
    if cell["method"] == "loop":
        classes = loop_search(queries, gallery, owners, TOP_K)
    elif cell["method"] == "exact":
        _, classes = predict.nearest_classes(queries, gallery, labels, TOP_K)
    else:
        index = gallery_index.build(gallery)
        result["build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        _, classes, settled = gallery_index.nearest_classes(index, queries, labels,
                                                            TOP_K)
        if not settled.all():
            classes[~settled] = predict.nearest_classes(queries[~settled], gallery,
                                                        labels, TOP_K)[1]
        result["settled"] = float(settled.mean())
    seconds = time.perf_counter() - started
    result.update(queries=len(queries), search_s=seconds,
                  queries_per_s=len(queries) / seconds, peak_mb=status_mb("VmHWM"))
    if cell["method"] == "exact":
        np.save(os.path.join(folder, "exact_classes.npy"), classes)
        np.save(os.path.join(folder, "exact_images.npy"),
                exact_nearest_images(queries, gallery))
    else:
        exact = np.load(os.path.join(folder, "exact_classes.npy"))[:len(queries)]
        result["answers_equal"] = float(np.mean((classes == exact).all(axis=1)))
    if cell["method"] == "index":  # after the peak: serialising copies the index
        result["index_mb"] = len(gallery_index.faiss.serialize_index(index)) / 2 ** 20
        exact_images = np.load(os.path.join(folder, "exact_images.npy"))
        result["recall_image"] = image_recall(index, gallery_index.EF_SEARCH, queries,
                                              exact_images)
        result["recall_class"] = float(np.mean(classes[:, 0] == exact[:, 0]))
        result["sweep"] = [ef_row(ef, index, queries, labels, exact, exact_images)
                           for ef in cell.get("ef_sweep", [])]
    return result


def ef_row(ef, index, queries, labels, exact, exact_images):
    """The index searched as predict.py does, keeping ef candidates: speed, answers and
    recall@1 (the queries it does not settle counted as misses, not searched)."""
    import gallery_index
    started = time.perf_counter()
    _, classes, settled = gallery_index.nearest_classes(index, queries, labels, TOP_K,
                                                        ef_search=ef)
    seconds = time.perf_counter() - started
    return dict(ef_search=ef, queries_per_s=len(queries) / seconds,
                settled=float(settled.mean()),
                answers_equal=float(np.mean((classes == exact).all(axis=1) & settled)),
                recall_image=image_recall(index, ef, queries, exact_images),
                recall_class=float(np.mean((classes[:, 0] == exact[:, 0]) & settled)))


def image_recall(index, ef, queries, exact_images):
    """The share of queries whose nearest image from the index, searched keeping ef
    candidates, is their exact nearest image."""
    index.hnsw.efSearch = ef
    _, nearest = index.search(np.ascontiguousarray(queries), 1)
    return float(np.mean(nearest[:, 0] == exact_images))


def run_cell(cell):
    """Run `cell` in a fresh Python process: its result, or {"error": why}."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__),
                           "--cell=" + json.dumps(cell)], capture_output=True, text=True)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    return {"error": f"exit status {done.returncode} (-9: out of memory?): "
                     f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}"}


# --- the report -----------------------------------------------------------------------

ROW = "{:>9} {:<6} {:>8} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9}"


def table_row(size, method, result):
    if "error" in result:
        return f"{size:>9,} {method:<6} failed: {result['error']}"

    def share(key):
        return f"{result[key]:.4f}" if key in result else "-"
    rate = result["queries_per_s"]
    return ROW.format(f"{size:,}", method, f"{result['queries']:,}",
                      f"{rate:,.1f}" if rate >= 10 else f"{rate:.3g}",
                      f"{result['build_s']:.1f}" if "build_s" in result else "-",
                      f"{result['loaded_mb']:,.0f}", f"{result['peak_mb']:,.0f}",
                      f"{result['index_mb']:,.0f}" if "index_mb" in result else "-",
                      share("answers_equal"), share("recall_image"),
                      share("recall_class"))


def benchmark_size(size, args, scratch):
    """Every method's cell for one gallery size, printed as each finishes."""
    import gallery_index
    folder = os.path.join(scratch, str(size))
    os.makedirs(folder)
    gallery, labels, queries = generate(size, args.dims, args.queries)
    np.save(os.path.join(folder, "gallery.npy"), gallery)
    np.save(os.path.join(folder, "owners.npy"), np.char.add("c", labels.astype(str)))
    np.save(os.path.join(folder, "queries.npy"), queries)
    del gallery, labels, queries
    cells = []
    for method in ("exact", "loop", "index"):
        n_queries = args.queries
        if method == "loop":
            if size > args.loop_max:
                continue
            n_queries = min(args.queries, max(3, args.loop_work // size))
        if method == "index" and size < args.index_min:
            continue
        result = run_cell(dict(method=method, folder=folder, queries=n_queries,
                               ef_sweep=args.ef_sweep))
        print(table_row(size, method, result), flush=True)
        for row in result.get("sweep", []):
            print(f"{'':>16}efSearch {row['ef_search']:>4}: "
                  f"{row['queries_per_s']:>9,.1f} queries/s, answers = exact "
                  f"{row['answers_equal']:.4f}, recall@1 image {row['recall_image']:.4f}"
                  f", class {row['recall_class']:.4f}", flush=True)
        cells.append(dict(result, size=size, method=method))
    by_method = {c["method"]: c for c in cells if "queries_per_s" in c}
    if "loop" in by_method and "exact" in by_method:
        print(f"{'':>16}exact / loop queries/s: "
              f"{by_method['exact']['queries_per_s'] / by_method['loop']['queries_per_s']:,.0f}x",
              flush=True)
    if "index" in by_method and "exact" in by_method:
        print(f"{'':>16}index / exact queries/s: "
              f"{by_method['index']['queries_per_s'] / by_method['exact']['queries_per_s']:.1f}x"
              f" (index: {gallery_index.SETTINGS}, efSearch={gallery_index.EF_SEARCH})",
              flush=True)
    return cells


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes for a smoke test: {QUICK}")
    parser.add_argument("--sizes", default=[1000, 10000, 30000, 100000, 300000, 1000000],
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="gallery sizes in images (default 1000,10000,30000,"
                             "100000,300000,1000000)")
    parser.add_argument("--dims", type=int, default=128,
                        help="embedding dimensions (default 128, the size most of "
                             "the backbones give)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--loop_max", type=int, default=100000,
                        help="the largest gallery the per-class loop is run on")
    parser.add_argument("--loop_work", type=int, default=300000,
                        help="the loop runs on loop_work / size queries (3 or more)")
    parser.add_argument("--index_min", type=int, default=1000,
                        help="the smallest gallery the index is built for")
    parser.add_argument("--ef_sweep", default=[128, 256, 512, 1024],
                        type=lambda text: [int(v) for v in text.split(",") if v],
                        help="efSearch values the index is also searched with, after "
                             "its EF_SEARCH (default 128,256,512,1024)")
    parser.add_argument("--out", default="benchmarks/identify.json")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # a worker process's task
    args = parser.parse_args(argv)
    if args.quick:  # explicit options still win over the quick sizes
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv):
    args = parse_args(argv)
    if args.cell:
        print(json.dumps(run_in_this_process(json.loads(args.cell))))
        return 0
    import gallery_index
    import runs
    started, load_at_start = time.time(), os.getloadavg()
    machine = {"cpu": cpu_model(), "cpus": os.cpu_count(),
               "ram_gb": meminfo_gb("MemTotal"), "python": sys.version.split()[0],
               "numpy": np.__version__, "faiss": gallery_index.faiss.__version__,
               "load_average_start": load_at_start}
    print(f"{machine['cpu']}, {machine['cpus']} cores, RAM {machine['ram_gb']:.1f} GB; "
          f"Python {machine['python']}, NumPy {machine['numpy']}, faiss "
          f"{machine['faiss']}")
    print(f"generated gallery: N images of {args.dims} dimensions in N/{PER_CLASS} "
          f"classes (centres N(0, I/D), images centre + N(0, {NOISE ** 2:g} I/D)); "
          f"queries: new images of random classes; top {TOP_K} classes per query")
    print("each cell in a process of its own: start MB = its VmRSS with the gallery "
          "loaded (and TensorFlow, which predict.py imports), peak MB = its VmHWM after "
          "build and search;\nindex MB = the index's stored size; answers = share of queries "
          "whose top-k classes equal exact's; recall@1 = index vs exact")
    print(ROW.format("gallery", "method", "queries", "queries/s", "build s", "start MB",
                     "peak MB", "index MB", "answers", "recall@1", "recall@1"))
    print(ROW.format("", "", "", "", "", "", "", "", "= exact", "image", "class"))
    cells = []
    with tempfile.TemporaryDirectory(prefix="identify-benchmark-") as scratch:
        for size in args.sizes:
            cells += benchmark_size(size, args, scratch)
    if load_at_start[0] > 0.5:
        print(f"load average before the run: {load_at_start[0]:.2f}: the CPUs were busy, "
              f"speeds are lower than on a quiet machine")
    settings = {k: v for k, v in vars(args).items() if k != "cell"}
    settings.update(per_class=PER_CLASS, noise=NOISE, top_k=TOP_K, seed=SEED,
                    index=gallery_index.SETTINGS, ef_search=gallery_index.EF_SEARCH,
                    min_size=gallery_index.MIN_SIZE)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    runs.write_json(args.out, {"settings": settings, "machine": machine, "cells": cells,
                               "wall_s": time.time() - started})
    print(f"wrote {args.out} ({time.time() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
