"""Enrol people from one photo each and recognise them, without retraining.

    python examples/identify_demo.py --run_dir=RUN [--gallery=DIR]

Takes the run's test people (never seen in training), enrols each in a gallery folder
with their first image only, identifies every other image of theirs and prints the top-1
accuracy. Then enrols one more person (a validation person, also never trained on) by
adding a folder, and identifies their other images: the cached gallery embeddings are
refreshed for the new folder only.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import prepare_data  # noqa: E402
import runs  # noqa: E402
from predict import Matcher  # noqa: E402


def enrol(gallery, name, first_image):
    """Enrolling = a folder named after the person holding one photo."""
    os.makedirs(os.path.join(gallery, name), exist_ok=True)
    shutil.copy(first_image, os.path.join(gallery, name))


def identify_all(matcher, gallery, people):
    """Over every image but the enrolled first one of each person: how many have the
    right person nearest (closed set), how many are also accepted at the threshold
    (an answer of "unknown" counts as wrong), and how many queries there were."""
    queries = [(name, path) for name, files in people for path in files[1:]]
    results = matcher.identify([path for _, path in queries], gallery, top_k=1)
    nearest = sum(result["top"][0][0] == name
                  for (name, _), result in zip(queries, results))
    accepted = sum(result["match"] == name for (name, _), result in zip(queries, results))
    return nearest, accepted, len(queries)


def demo_cannot_use(config, metrics_json):
    """Why this run cannot show enrolment of people it never saw, or None."""
    if not metrics_json:
        return ("has no metrics.json: its training did not finish (python train.py "
                "--resume=RUN continues it)")
    if not config["data_dir"]:
        return (f"was trained on the built-in {config['dataset']!r} data: the demo "
                f"enrols people from a folder of class folders (e.g. --dataset="
                f"att_faces_oneshot)")
    if config["split"] == "pairs":
        return ("was trained with split='pairs', so its test people were also "
                "training people: train with --split=classes for the demo")
    if metrics_json.get("refit_epochs"):
        return ("has no validation people left unseen (refit=True trained on them), "
                "so no newcomer can be added: use a run without refit")
    if not metrics_json.get("val_classes"):
        return ("has no validation people to add as a newcomer: train with "
                "--split=classes and a val_fraction that leaves some")
    return None


def empty_gallery(path):
    """`path` as a new or empty folder to enrol into (a temporary one if None): the
    figures count only the people the demo enrols, and nothing of the user's is mixed
    in or written over."""
    if path is None:
        return tempfile.mkdtemp(prefix="gallery-")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"gallery {path!r} is a file: pass a new or empty folder")
    if os.path.isdir(path) and os.listdir(path):
        raise ValueError(f"gallery {path!r} is not empty: the demo enrols into a new or "
                         f"empty folder, so that its figures count only the people it "
                         f"enrols; pass another folder, or leave --gallery out for a "
                         f"temporary one")
    os.makedirs(path, exist_ok=True)
    return path


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--gallery", default=None,
                        help="a new or empty folder to build the gallery in (default: a "
                             "temporary one)")
    args = parser.parse_args(argv)
    try:
        return demo(args.run_dir, args.gallery)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def demo(run_dir, gallery):
    config = runs.read_config(run_dir)
    metrics_json = runs.read_json(os.path.join(run_dir, "metrics.json"), default={})
    unusable = demo_cannot_use(config, metrics_json)
    if unusable:
        raise ValueError(f"{run_dir} {unusable}")
    folders = dict(prepare_data.scan_class_folders(config["data_dir"]))
    newcomer = metrics_json["val_classes"][0]
    missing = [name for name in metrics_json["test_classes"] + [newcomer]
               if name not in folders]
    if missing:
        raise ValueError(f"{', '.join(missing)}: the run's people are no longer class "
                         f"folders of {config['data_dir']!r}; restore them as they were "
                         f"for training")
    test_people = [(name, folders[name]) for name in metrics_json["test_classes"]]

    gallery = empty_gallery(gallery)
    matcher = Matcher(run_dir)
    for name, files in test_people:
        enrol(gallery, name, files[0])
    nearest, accepted, total = identify_all(matcher, gallery, test_people)
    print(f"{len(test_people)} unseen people enrolled with 1 image each "
          f"({', '.join(name for name, _ in test_people)}); on their other {total} "
          f"images: top-1 {nearest / total:.4f} ({nearest}/{total}), accepted at the "
          f"threshold {matcher.threshold:.4f} {accepted / total:.4f} ({accepted}/{total};"
          f" 'unknown' counts as wrong)")

    enrol(gallery, newcomer, folders[newcomer][0])
    nearest, accepted, total = identify_all(matcher, gallery,
                                            [(newcomer, folders[newcomer])])
    print(f"added folder {newcomer!r} (no retraining): top-1 {nearest}/{total} of its "
          f"other images, {accepted}/{total} accepted as {newcomer}")
    print(f"gallery: {gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
