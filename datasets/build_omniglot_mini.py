"""Build the mini Omniglot that ships with the repository (datasets/omniglot_mini/):
Omniglot's background set and Lake et al.'s 20 one-shot runs at 28x28 grey, each
drawing preprocessed exactly as training preprocesses a 105x105 Omniglot PNG at
--image_size=28,28, so a network trained on it also reads the original files.

    python datasets/build_omniglot_mini.py --omniglot=PATH/TO/omniglot

PATH/TO/omniglot holds images_background/<alphabet>/<character>/*.png and
one-shot-classification/all_runs/run01..run20, as unpacked from
https://github.com/brendenlake/omniglot (python/images_background.zip and
python/one-shot-classification/all_runs.zip). Writes images_background.npz and
all_runs/ beside this script's omniglot_mini/ folder (or --out=DIR).
"""
import argparse
import hashlib
import os
import shutil
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import prepare_data  # noqa: E402

SIZE = (28, 28)
HERE = os.path.dirname(os.path.abspath(__file__))


def _load(path):
    return prepare_data.load_image(path, SIZE)[:, :, 0]


def build_background(background_dir, out_dir, pool):
    classes = prepare_data.scan_class_folders(background_dir, strict=True)
    files = [path for _, paths in classes for path in paths]
    images = np.stack(pool.map(_load, files, chunksize=256))
    labels = np.repeat(np.arange(len(classes)), [len(paths) for _, paths in classes])
    names = np.array([name for name, _ in classes])
    relative = np.array([os.path.relpath(f, background_dir).replace(os.sep, "/")
                         for f in files])
    target = os.path.join(out_dir, "images_background.npz")
    np.savez_compressed(target + ".tmp.npz", images=images,
                        labels=labels.astype(np.int16), class_names=names, files=relative)
    os.replace(target + ".tmp.npz", target)
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    print(f"{target}: {len(images)} drawings of {len(classes)} characters in "
          f"{len(set(n.split('/')[0] for n in names))} alphabets; sha256 of the "
          f"pixels {digest}")


def build_runs(all_runs_dir, out_dir, pool):
    target = os.path.join(out_dir, "all_runs")
    temporary = target + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    runs = sorted(n for n in os.listdir(all_runs_dir) if n.startswith("run"))
    files = []
    for run in runs:
        shutil.copytree(os.path.join(all_runs_dir, run), os.path.join(temporary, run),
                        ignore=lambda folder, names: [n for n in names
                                                      if n.endswith(".png")])
        for part in ("training", "test"):
            folder = os.path.join(all_runs_dir, run, part)
            files += [os.path.join(run, part, f) for f in sorted(os.listdir(folder))
                      if f.endswith(".png")]
    drawings = pool.map(_load, [os.path.join(all_runs_dir, f) for f in files])
    for relative, drawing in zip(files, drawings):
        Image.fromarray(drawing).save(os.path.join(temporary, relative), optimize=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(temporary, target)
    print(f"{target}: {len(runs)} runs, {len(files)} drawings")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omniglot", required=True,
                        help="folder holding images_background/ and "
                             "one-shot-classification/all_runs/")
    parser.add_argument("--out", default=os.path.join(HERE, "omniglot_mini"),
                        help="where to write (default: datasets/omniglot_mini)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with Pool(os.cpu_count()) as pool:
        build_background(os.path.join(args.omniglot, "images_background"), args.out, pool)
        build_runs(os.path.join(args.omniglot, "one-shot-classification", "all_runs"),
                   args.out, pool)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
