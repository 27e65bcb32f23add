"""Photograph a run's test classes "with another camera": copies of their images as
taken, in another framing, in other light, and both, to see a threshold drift.

    python examples/shift_photos.py --run_dir=RUN --out=shifted
    python evaluate.py --run_dir=RUN --data_dir=shifted/framing

Writes OUT/as_taken, OUT/framing (each image shrunk to 75% inside a grey border),
OUT/light (darker: gamma 1.8) and OUT/both, one folder per test class of the run.
evaluate.py then reports verification at the run's threshold and at one re-calibrated
on half the classes, and warns when the distances drift (docs/evaluation.md).
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import prepare_data  # noqa: E402
import runs  # noqa: E402


def framing(image):
    """The picture at 75% of its size, centred on a grey background of the old size."""
    small = image.resize((int(0.75 * image.width), int(0.75 * image.height)),
                         Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, image.size, 128 if image.mode == "L" else (128,) * 3)
    canvas.paste(small, ((image.width - small.width) // 2,
                         (image.height - small.height) // 2))
    return canvas


def light(image):
    """Darker light: every pixel value v becomes 255 (v / 255)^1.8."""
    return Image.fromarray(np.clip(255.0 * (np.asarray(image) / 255.0) ** 1.8, 0,
                                   255).astype(np.uint8))


SHIFTS = {"as_taken": lambda image: image, "framing": framing, "light": light,
          "both": lambda image: light(framing(image))}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a run folder of train.py")
    parser.add_argument("--out", required=True, help="where to write the four folders")
    args = parser.parse_args(argv)
    try:
        config = runs.read_config(args.run_dir)
        test_classes = config.get("classes", {}).get("test")
        if not config["data_dir"] or not test_classes:
            raise ValueError(f"{args.run_dir} has no test classes of a folder to shift "
                             f"(a built-in dataset, or test_fraction=0)")
        mode = "L" if config["channels"] == 1 else "RGB"
        for name, files in prepare_data.scan_class_folders(config["data_dir"]):
            if name not in test_classes:
                continue
            for shift, change in SHIFTS.items():
                folder = os.path.join(args.out, shift, name)
                os.makedirs(folder, exist_ok=True)
                for path in files:
                    with Image.open(path) as image:
                        change(image.convert(mode)).save(os.path.join(
                            folder, os.path.splitext(os.path.basename(path))[0] + ".png"))
        print(f"{len(test_classes)} test classes in {', '.join(sorted(SHIFTS))} under "
              f"{args.out}")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
