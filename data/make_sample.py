"""Rebuild the small real sample in data/ from ../shared/data (run from the repo root).

The sample lets the README command and the tests run on real photos without the full
datasets: 60 train + 20 validation photos per cats/dogs class, downscaled so the longer side
is at most 200 px, and 20 train + 10 test CIFAR-10 images per class (already 32x32, copied as is).

    python data/make_sample.py [--source ../shared/data]
"""

import argparse
import shutil
from pathlib import Path

from PIL import Image

SAMPLE_DIR = Path(__file__).resolve().parent
CATS_DOGS_COUNTS = {"train": 60, "validation": 20}  # photos per class
CIFAR10_COUNTS = {"train": 20, "test": 10}  # images per class
MAX_SIDE = 200  # px, longer side of the downscaled cats/dogs photos


def _numeric_order(path):
    """cat.2.jpg before cat.10.jpg, so the sample is the first N photos as numbered."""
    return int(path.stem.split(".")[-1])


def copy_cats_and_dogs(source):
    for split, count in CATS_DOGS_COUNTS.items():
        for class_dir in sorted((source / "cats_and_dogs" / split).iterdir()):
            out_dir = SAMPLE_DIR / "cats_and_dogs" / split / class_dir.name
            out_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(class_dir.glob("*.jpg"), key=_numeric_order)[:count]:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                    image.save(out_dir / path.name, quality=88)


def copy_cifar10(source):
    for split, count in CIFAR10_COUNTS.items():
        for class_dir in sorted((source / "cifar10" / split).iterdir()):
            out_dir = SAMPLE_DIR / "cifar10" / split / class_dir.name
            out_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copy2(path, out_dir / path.name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    copy_cats_and_dogs(args.source)
    copy_cifar10(args.source)


if __name__ == "__main__":
    main()
