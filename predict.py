"""Use a trained network without retraining: verify two images, or identify a person
from a gallery where each person is a folder of one or more photos.

    python predict.py verify RUN IMG_A IMG_B [--gallery=DIR]
    python predict.py identify RUN --gallery=DIR QUERY [QUERY ...] [--top_k=3]
                               [--csv=FILE [--overwrite]]
    python predict.py calibrate RUN --gallery=DIR [--far=0.001]

Enrolling someone new = adding a folder to the gallery. Gallery embeddings are cached
in DIR/.siamese-cache-<model>.npz and refreshed for the files that changed. `calibrate`
sets the same/different threshold on the gallery's own classes and stores it in
DIR/.siamese-threshold-<model>.json, where verify and identify with that gallery use it.
A QUERY may be a folder: every image in it is identified. Very large galleries are
searched through an approximate nearest-neighbour index (gallery_index.py), kept in
DIR/.siamese-index-<model>.npz.

From Python:

    from predict import Matcher
    matcher = Matcher("runs/att_faces-20261125-101500")
    matcher.verify("a.pgm", "b.pgm")        # {"distance": .., "threshold": .., "same": ..}
    matcher.identify(["q.pgm"], "gallery/")  # [{"query": .., "match": .., "top": [..]}]
"""
import argparse
import csv
import hashlib
import numbers
import os
import sys
import warnings
import zipfile

import numpy as np

import calibration
import gallery_index
import losses
import metrics
import prepare_data
import progress
import runs
import siamese_network_funcs

EMBED_CHUNK = 1024  # images loaded and embedded at a time


class Matcher:
    """A trained run's embedding network, preprocessing and calibrated threshold."""

    def __init__(self, run_dir):
        self.config = runs.read_config(run_dir)
        needed = ["channels", "downsample", "margin"]
        if not self.config.get("image_size"):
            needed.append("source_size")
        missing = [key for key in needed if key not in self.config]
        if missing:
            raise ValueError(f"{os.path.join(run_dir, 'config.json')} lacks "
                             f"{', '.join(missing)}: it comes from another version of "
                             f"this project; retrain with this version")
        model, self.base = runs.load_models(run_dir)
        self.scorer = siamese_network_funcs.pair_scorer(model)
        evaluation = runs.read_json(os.path.join(run_dir, "evaluation.json"), default={})
        # What the run's threshold knows: the spread of its validation classes.
        self.reference = evaluation.get("impostor_distances")
        self.threshold_source = "the run's, calibrated on its validation pairs"
        if "threshold" in evaluation:
            self.threshold = evaluation["threshold"]
            if isinstance(self.threshold, bool) or not isinstance(self.threshold,
                                                                  (int, float)):
                raise ValueError(f"{os.path.join(run_dir, 'evaluation.json')} holds "
                                 f"threshold={self.threshold!r}, not a number: restore "
                                 f"it, or rerun python evaluate.py --run_dir={run_dir}")
        else:  # the training stopped before its evaluation, or the file was removed
            # Older runs have no "distance" and "loss": they were all Euclidean, contrastive.
            config = {"distance": "euclidean", "loss": "contrastive", **self.config}
            rule = losses.fixed_rule(config)
            calibrate = (f"python evaluate.py --run_dir={run_dir} calibrates the "
                         f"threshold on the validation pairs")
            if not losses.fixed_rule_applies(config):
                raise ValueError(f"{run_dir} has no evaluation.json, so no calibrated "
                                 f"threshold, and the fixed {rule}: {calibrate} first")
            warnings.warn(f"{run_dir} has no evaluation.json: deciding by the write-ups' "
                          f"fixed {rule}; {calibrate}")
            self.threshold = losses.fixed_threshold(config)
            self.threshold_source = f"the fixed {rule}"
        with open(os.path.join(run_dir, "embedding.keras"), "rb") as handle:
            self.model_id = hashlib.sha1(handle.read()).hexdigest()[:12]
        self.run_dir = run_dir

    def load(self, path):
        """One image file preprocessed exactly as in training, whatever its size or mode."""
        if not os.path.isfile(path):
            what = ("is a folder, not an image file" if os.path.isdir(path)
                    else "does not exist")
            raise FileNotFoundError(f"image {path!r} {what}")
        size = self.config.get("image_size") or self.config["source_size"]
        try:
            return prepare_data.load_image(path, tuple(size), self.config["downsample"],
                                           self.config["channels"])
        except prepare_data.UNREADABLE as error:
            raise ValueError(f"cannot read image {path!r} ({error}): replace or remove "
                             f"it") from error

    def embed_files(self, paths):
        """Embeddings (N, D) of image files, EMBED_CHUNK at a time: memory stays
        bounded, and a long run shows a progress bar on stderr."""
        return np.concatenate([
            self.embed([self.load(p) for p in paths[start:start + EMBED_CHUNK]])
            for start in progress.steps("embedding the queries", len(paths),
                                        EMBED_CHUNK)])

    def embed(self, images):
        """Embeddings (N, D) of preprocessed images (a list of uint8 (H, W, C))."""
        return metrics.embed(self.base, np.stack(images))

    def verify(self, path_a, path_b, gallery_dir=None):
        """Distance between two images (1 - p(same) for Koch's head), its similarity
        (metrics.similarity) and the decision at the threshold: the one calibrated on
        `gallery_dir` where `calibrate` stored one, else the run's."""
        a, b = self.embed_files([path_a, path_b])
        distance = float(self.scorer(a, b))
        threshold, source = self.threshold, self.threshold_source
        if gallery_dir:
            threshold, source, reference = self.gallery_threshold(gallery_dir)
            embeddings, owners, _ = self.gallery(gallery_dir)
            self.warn_on_drift(embeddings, owners, gallery_dir, threshold, source,
                               reference)
        return {"distance": distance, "threshold": threshold,
                "threshold_source": source, "same": distance < threshold,
                "similarity": float(metrics.similarity(distance, threshold))}

    def calibration_file(self, gallery_dir):
        return os.path.join(gallery_dir, f".siamese-threshold-{self.model_id}.json")

    def gallery_threshold(self, gallery_dir):
        """(threshold, where it came from, the spread it was calibrated on) for
        decisions on `gallery_dir`'s classes: what `calibrate` stored there, else the
        run's."""
        stored = runs.read_json(self.calibration_file(gallery_dir), default={})
        if isinstance(stored.get("threshold"), float):
            return (stored["threshold"],
                    f"calibrated on the gallery {gallery_dir} by {stored['rule']}",
                    stored.get("impostor_distances"))
        return self.threshold, self.threshold_source, self.reference

    def calibrate(self, gallery_dir, far=None, seed=0):
        """Calibrate a threshold on a labelled gallery (calibration.calibrate: half its
        classes set it, the other half measure it) and store it with the gallery, where
        verify and identify with that gallery use it. Returns the report."""
        embeddings, owners, _ = self.gallery(gallery_dir)
        try:
            report = calibration.calibrate(embeddings, owners, self.scorer, far, seed)
        except ValueError as error:
            raise ValueError(f"gallery {gallery_dir!r} cannot be calibrated: {error}; "
                             f"the run's threshold ({self.threshold:.4f}) stays in use"
                             ) from None
        report["run_threshold"] = self.threshold
        runs.write_json(self.calibration_file(gallery_dir), report)
        return report

    def gallery(self, gallery_dir):
        """(embeddings, class per image, paths) of a gallery folder, from the cache
        where the files are unchanged."""
        if not os.path.isdir(gallery_dir):
            raise FileNotFoundError(f"gallery {gallery_dir!r} is not a folder: pass "
                                    f"--gallery=DIR, a folder with one sub-folder of "
                                    f"images per person or class")
        classes = prepare_data.scan_class_folders(gallery_dir)
        paths = [p for _, files in classes for p in files]
        owners = [name for name, files in classes for _ in files]
        stamps = [_stamp(p) for p in paths]
        cache = os.path.join(gallery_dir, f".siamese-cache-{self.model_id}.npz")
        known = _read_cache(cache)
        missing = [(p, s) for p, s in zip(paths, stamps) if s not in known]
        unreadable = set()
        for start in progress.steps("embedding the gallery", len(missing), EMBED_CHUNK):
            images = {}
            for path, stamp in missing[start:start + EMBED_CHUNK]:
                try:  # a broken file is skipped, as in training
                    images[stamp] = self.load(path)
                except ValueError as error:
                    warnings.warn(f"{error}; it is left out of the gallery until then")
                    unreadable.add(stamp)
            if images:
                known.update(zip(images, self.embed(list(images.values()))))
        kept = [i for i, stamp in enumerate(stamps) if stamp not in unreadable]
        if not kept:
            raise ValueError(f"gallery {gallery_dir!r} holds no readable image")
        paths, owners, stamps = ([items[i] for i in kept]
                                 for items in (paths, owners, stamps))
        embeddings = np.stack([known[s] for s in stamps])
        if missing or len(known) != len(stamps):
            try:
                runs.atomic_write(cache, lambda tmp: np.savez(
                    tmp, stamps=np.asarray(stamps), embeddings=embeddings))
            except OSError as error:
                warnings.warn(f"could not write the gallery cache {cache}: {error}")
        return embeddings, owners, paths

    def identify(self, query_paths, gallery_dir, top_k=3):
        """For each query image (a folder stands for every image in it, see
        query_files): the top_k gallery classes by their nearest image, and the best
        one as `match`, or "unknown" when even it is beyond the threshold. Galleries
        of gallery_index.MIN_SIZE images or more are searched through an index (with
        the Euclidean distance; Koch's head always searches every image)."""
        if (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                or top_k < 1):
            raise ValueError(f"top_k must be a whole number >= 1 (how many gallery "
                             f"classes to list per query); got {top_k!r}")
        query_paths = query_files(query_paths)
        embeddings, owners, _ = self.gallery(gallery_dir)
        threshold, source, reference = self.gallery_threshold(gallery_dir)
        self.warn_on_drift(embeddings, owners, gallery_dir, threshold, source,
                           reference)
        queries = self.embed_files(query_paths)
        index = None
        if self.scorer.alpha is None and len(embeddings) >= gallery_index.MIN_SIZE:
            index = gallery_index.load_or_build(self.index_file(gallery_dir),
                                                embeddings)
        ranked = self.rank(queries, embeddings, owners, top_k, threshold, index)
        for path, result in zip(query_paths, ranked):
            result.update(query=path, threshold_source=source)
        return ranked

    def index_file(self, gallery_dir):
        return os.path.join(gallery_dir, f".siamese-index-{self.model_id}.npz")

    def warn_on_drift(self, embeddings, owners, gallery_dir, threshold, source,
                      reference):
        """Warn when the gallery's classes lie nearer or farther apart than the
        `reference` spread its threshold was calibrated on (calibration.drift)."""
        median = calibration.drift(embeddings, owners, reference, self.scorer)
        if median is not None:
            warnings.warn(calibration.drift_message(
                median, reference, threshold, source,
                f"python predict.py calibrate {self.run_dir} --gallery={gallery_dir} "
                f"sets it on this gallery's classes"))

    def rank(self, queries, embeddings, owners, top_k=3, threshold=None, index=None):
        """For each query embedding: {"match", "top", "similarity", "threshold"}, the
        top_k classes of `owners` (one per gallery embedding) by their nearest image,
        and the best as `match`, or "unknown" when even it is beyond `threshold` (the
        run's by default). Ties keep the classes' order of first appearance. With
        `index` (gallery_index.load_or_build of these embeddings) the nearest images
        come from it, else from an exhaustive search."""
        threshold = self.threshold if threshold is None else threshold
        names, labels = class_labels(owners)
        if index is None:
            distances, classes = nearest_classes(queries, embeddings, labels, top_k,
                                                 self.scorer)
        else:
            distances, classes, settled = gallery_index.nearest_classes(
                index, queries, labels, top_k)
            if not settled.all():  # the few the index cannot settle: every image
                distances[~settled], classes[~settled] = nearest_classes(
                    np.asarray(queries)[~settled], embeddings, labels, top_k,
                    self.scorer)
        results = []
        for row, columns in zip(distances, classes):
            top = [(names[c], float(d)) for c, d in zip(columns, row)]
            match = top[0][0] if top[0][1] < threshold else "unknown"
            similarity = float(metrics.similarity(top[0][1], threshold))
            results.append({"match": match, "top": top, "threshold": threshold,
                            "similarity": similarity})
        return results


def class_labels(owners):
    """(class names in order of first appearance in `owners`, the class index of each
    gallery image into those names)."""
    names = list(dict.fromkeys(str(name) for name in owners))
    index_of = {name: i for i, name in enumerate(names)}
    labels = np.fromiter((index_of[str(name)] for name in owners), np.int64, len(owners))
    return names, labels


def nearest_classes(queries, embeddings, labels, top_k, scorer=metrics.EUCLIDEAN,
                    chunk_bytes=2 ** 27):
    """Each query's top_k classes by their nearest image, by exhaustive search: (Q, k)
    distances and (Q, k) class indices (`labels` holds each gallery image's), nearest
    first, ties in class order; k = min(top_k, classes). Memory stays within about
    `chunk_bytes` whatever the number of classes."""
    distances, classes = [], []
    for per_class in _class_minima(queries, embeddings, labels, scorer, chunk_bytes):
        nearest = smallest_columns(per_class, top_k)
        classes.append(nearest)
        distances.append(np.take_along_axis(per_class, nearest, axis=1))
    k = min(top_k, int(labels.max()) + 1)
    if not classes:
        return np.zeros((0, k)), np.zeros((0, k), np.int64)
    return np.concatenate(distances), np.concatenate(classes)


def _class_minima(queries, embeddings, labels, scorer, chunk_bytes):
    """Yield, per chunk of queries, the (chunk, C) distances to each class's nearest
    image. The gallery is sorted by class once and each class's minimum taken with one
    grouped reduction; a chunk's (queries, gallery) block stays under `chunk_bytes`.

    Euclidean distances come from the expansion |q|^2 + |g|^2 - 2 q.g: a matrix
    product instead of a (queries, gallery, dims) difference, in float64 because in
    float32 the cancellation would blur the small distances that decide a match. The
    minimum is taken before |q|^2 is added and the square root: neither changes the
    order within a row."""
    by_class = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(labels[by_class]) != 0])
    gallery = np.asarray(embeddings)[by_class]
    queries = np.asarray(queries)
    euclidean = scorer.alpha is None
    if euclidean:
        gallery = gallery.astype(np.float64)
        queries = queries.astype(np.float64)
        gallery_norms = np.einsum("ij,ij->i", gallery, gallery)
        row_bytes = len(gallery) * 8
    else:  # Koch's head: its weighted L1 needs the (queries, gallery, dims) difference
        row_bytes = gallery.size * gallery.itemsize
    step = max(1, chunk_bytes // max(1, row_bytes))
    for start in progress.steps("searching the gallery", len(queries), step):
        chunk = queries[start:start + step]
        if not euclidean:
            yield np.minimum.reduceat(scorer(gallery[None, :, :], chunk[:, None, :]),
                                      starts, axis=1)
            continue
        partial = chunk @ gallery.T  # |g|^2 - 2 q.g, built in place
        partial *= -2
        partial += gallery_norms
        squared = np.minimum.reduceat(partial, starts, axis=1)
        squared += np.einsum("ij,ij->i", chunk, chunk)[:, None]
        yield np.sqrt(np.maximum(squared, 1e-7))  # metrics.PairScorer's floor


def smallest_columns(rows, k):
    """Column indices of the k smallest values of each row, smallest first and ties
    in column order: what a stable argsort's first k columns are, in time linear in
    the columns."""
    if k >= rows.shape[1]:
        return np.argsort(rows, axis=1, kind="stable")
    kth = np.partition(rows, k - 1, axis=1)[:, k - 1]
    picked = []
    for row, bound in zip(rows, kth):
        candidates = np.flatnonzero(row <= bound)  # ties with the k-th may be > k
        picked.append(candidates[np.argsort(row[candidates], kind="stable")[:k]])
    return np.array(picked, np.int64).reshape(len(rows), k)


def query_files(paths):
    """The image files that `paths` name: a file stands for itself, a folder for every
    image file in it and its sub-folders (hidden ones left out), naturally sorted by
    their path in it (s2 before s10)."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"image {path!r} does not exist")
            files.append(path)
            continue
        found, others = [], []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if prepare_data.is_image_file(name):
                    found.append(os.path.join(root, name))
                elif not (name.startswith(".")
                          or name.lower() in prepare_data.SYSTEM_FILES):
                    others.append(os.path.join(root, name))
        if not found:
            raise ValueError(f"query folder {path!r} holds no image file (the "
                             f"extensions read are "
                             f"{' '.join(prepare_data.IMAGE_EXTENSIONS)}): pass a "
                             f"folder of images, or image files")
        if others:
            warnings.warn(f"skipping {len(others)} file(s) in the query folder {path} "
                          f"that are not images (e.g. {others[0]})")
        files += sorted(found, key=lambda file: prepare_data._natural_key(
            os.path.relpath(file, path)))
    return files


def csv_header(top_k):
    return (["query", "match", "distance", "similarity"]
            + [column for k in range(1, top_k + 1)
               for column in (f"top{k}", f"top{k}_distance")])


def check_csv(path, overwrite):
    """Refuse, before any work, a --csv that would replace a file without
    --overwrite, or that cannot be written."""
    if os.path.isdir(path):
        raise ValueError(f"--csv={path} is a folder: pass a file name, e.g. "
                         f"--csv={os.path.join(path, 'identified.csv')}")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"--csv={path} already exists: pass another file name, or "
                         f"--overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--csv={path}: the folder {folder} does not exist: create "
                         f"it, or pass a file in an existing folder")


def write_csv(path, results, top_k):
    """One row per identify() result, in csv_header(top_k)'s columns; the top columns
    of a gallery with fewer than top_k classes stay empty. Written atomically: a file
    it replaces is never left half-written."""
    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(csv_header(top_k))
            for result in results:
                row = [result["query"], result["match"], result["top"][0][1],
                       result["similarity"]]
                row += [value for pair in result["top"] for value in pair]
                writer.writerow(row + ["", ""] * (top_k - len(result["top"])))
    runs.atomic_write(path, write)


def _read_cache(cache):
    """{stamp: embedding} from a gallery cache; {} (rebuilt) when it is absent or
    unreadable. Never unpickles: a cache holding Python objects is refused."""
    if not os.path.isfile(cache):
        return {}
    try:
        with open(cache, "rb") as handle, np.load(handle, allow_pickle=False) as saved:
            stamps, embeddings = saved["stamps"], saved["embeddings"]
        if stamps.ndim != 1 or embeddings.ndim != 2 or len(stamps) != len(embeddings):
            raise ValueError("its arrays do not match")
        return dict(zip(stamps.tolist(), embeddings))
    except (ValueError, OSError, KeyError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile) as error:
        warnings.warn(f"ignoring the unreadable gallery cache {cache} ({error}); "
                      f"embedding the gallery again")
        return {}


def _stamp(path):
    """What identifies a file's content for the cache: its path, size, modification
    time and inode change time. The change time matters: unzip, tar, `cp -p` and `mv`
    carry a file's modification time over, so a photo replaced by another of the same
    size would keep its old embedding; any rewrite or rename sets the change time, and
    nothing can set it back."""
    info = os.stat(path)
    return (f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}|"
            f"{info.st_ctime_ns}|{info.st_ino}")


def build_parser():
    """predict.py's command line: a command (verify or identify) and the paths it acts
    on."""
    usage_paragraphs = "\n\n".join(__doc__.split("\n\n")[:2])
    parser = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{usage_paragraphs}\n\n"
                    "Unlike train.py and evaluate.py, which take --key=value settings, "
                    "predict.py takes a\ncommand (verify, identify or calibrate) and positional "
                    "paths: it acts on files, a trained run\nand images, and changes no "
                    "setting.")
    commands = parser.add_subparsers(dest="command", required=True,
                                     help="what to do; `predict.py COMMAND -h` explains "
                                          "its arguments")
    run_help = "a run folder written by train.py, e.g. runs/att_faces-20261125-101500"
    verify = commands.add_parser("verify", help="are two images of the same class?",
                                 description="Are two images of the same class? "
                                             "Prints same or different, the distance, "
                                             "its similarity and the threshold.")
    verify.add_argument("run_dir", help=run_help)
    verify.add_argument("image_a", help="an image file")
    verify.add_argument("image_b", help="the image file to compare with image_a")
    gallery_threshold = ("decide by the threshold `calibrate` stored with this gallery "
                         "(else the run's)")
    verify.add_argument("--gallery", help=gallery_threshold)
    identify = commands.add_parser(
        "identify", help="whose images are these?",
        description="Whose images are these? Prints, per query, the nearest gallery "
                    "classes and the match, or unknown when even the nearest is beyond "
                    "the threshold; with --csv, writes them to a file instead. A "
                    f"gallery of {gallery_index.MIN_SIZE:,} images or more is searched "
                    "through an approximate nearest-neighbour index (built once, kept "
                    "with the gallery), a smaller one image by image.")
    identify.add_argument("run_dir", help=run_help)
    identify.add_argument("queries", nargs="+",
                          help="image files to identify, each on its own, or folders: "
                               "every image file in a folder and its sub-folders, in "
                               "natural order (s2 before s10)")
    identify.add_argument("--gallery", required=True,
                          help="folder with one sub-folder of images per person/class")
    identify.add_argument("--top_k", type=int, default=3,
                          help="how many gallery classes to list per query, nearest "
                               "first (default %(default)s)")
    identify.add_argument("--csv", metavar="FILE",
                          help="write one row per query to FILE, with the columns "
                               "query, match, distance (to the best class), similarity, "
                               "then top1, top1_distance, ..., topK, topK_distance; an "
                               "existing FILE is kept unless --overwrite")
    identify.add_argument("--overwrite", action="store_true",
                          help="let --csv replace an existing FILE")
    calibrate = commands.add_parser(
        "calibrate", help="set the threshold on a gallery's own classes",
        description="Set the same/different threshold on a labelled gallery: half its "
                    "classes calibrate it, the other half measure the accuracy and "
                    "error rates to expect. Stores it with the gallery.")
    calibrate.add_argument("run_dir", help=run_help)
    calibrate.add_argument("--gallery", required=True,
                           help="folder with one sub-folder of images per person/class; "
                                "at least 4 classes with 2 or more images")
    calibrate.add_argument("--far", type=float,
                           help="the false-accept rate to allow, e.g. 0.001 (default: "
                                "the threshold of best accuracy)")
    return parser


def print_calibration(report, gallery):
    expected = report["expected"]
    print(f"threshold {report['threshold']:.4f} by {report['rule']} on "
          f"{report['calibration_classes']} classes of {gallery} "
          f"({report['calibration_pairs']} pairs; equal-error-rate threshold "
          f"{report['eer_threshold']:.4f}); the run's was "
          f"{report['run_threshold']:.4f}")
    print(f"expected on the other {report['check_classes']} classes "
          f"({report['check_pairs']} pairs): accuracy {expected['accuracy']:.4f}, "
          f"false accepts {expected['far']:.4f}, false rejects {expected['frr']:.4f} "
          f"(ROC AUC {report['check_roc_auc']:.4f})")
    print(f"stored with the gallery: verify --gallery={gallery} and identify "
          f"--gallery={gallery} decide by it")


def main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "overwrite", False) and not args.csv:
        parser.error("--overwrite lets --csv replace its file: give --csv=FILE too")
    try:
        if getattr(args, "csv", None):  # before any work: refused or writable
            check_csv(args.csv, args.overwrite)
        matcher = Matcher(args.run_dir)
        if args.command == "verify":
            result = matcher.verify(args.image_a, args.image_b, args.gallery)
            decision = "same" if result["same"] else "different"
            print(f"{decision}: distance {result['distance']:.4f}, similarity "
                  f"{result['similarity']:.2f} (threshold {result['threshold']:.4f}: "
                  f"{result['threshold_source']})")
        elif args.command == "calibrate":
            print_calibration(matcher.calibrate(args.gallery, args.far), args.gallery)
        else:
            results = matcher.identify(args.queries, args.gallery, args.top_k)
            print(f"threshold {results[0]['threshold']:.4f}: "
                  f"{results[0]['threshold_source']}")
            if args.csv:
                check_csv(args.csv, args.overwrite)  # nothing appeared there meanwhile
                write_csv(args.csv, results, args.top_k)
                known = sum(result["match"] != "unknown" for result in results)
                print(f"wrote {args.csv}: {len(results)} queries, {known} matched, "
                      f"{len(results) - known} unknown")
            else:
                for result in results:
                    ranked = ", ".join(f"{name} {d:.4f}" for name, d in result["top"])
                    print(f"{result['query']}: {result['match']}, similarity "
                          f"{result['similarity']:.2f}  (nearest: {ranked})")
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
