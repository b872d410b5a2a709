"""Memory and speed against the number of photos: decoded pixels in memory (--cache ram) vs in
a disk cache (--cache disk), each on a first and a second run (and --cache none: no cache).

    python bench/scale.py --sizes 2000 8000 [--image-size 224] [--steps 20]
    python bench/scale.py --sizes 8000 --modes ram disk none

For each N, a temporary folder of N photos (two classes) is made of hard links to
../shared/data/cats_and_dogs photos under new names (a photo reused under another name is
another file to the cache), and for ram then disk, first then second run, one fresh process
(so each peak is its own) loads the folder as `catsdogs train` does (--val-split 0.2, the
calibration photos set aside) and trains a deliberately tiny CNN (one strided convolution: the
input pipeline's cost shows, not the model's) on augmented batches. Printed per row: the
files decoded, peak RSS of that process (ru_maxrss; the forked decode workers are not
counted), seconds from the start of loading (TensorFlow already imported) to the end of the
first training step, and images/s over the next --steps steps. The disk cache lives in the
temporary folder and goes with it. `none` keeps no pixels: every file is checked once at the
start (hashed, decoded small), then each batch decodes its photos again as it is read.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = ("cats", "dogs")


def make_folder(root, count):
    """`count` photos in root/cats and root/dogs: hard links (symbolic where the disk differs)
    to the shared photos, cycled, each under a new name."""
    from machine import shared_data

    source = shared_data("cats_and_dogs")
    photos = {name: sorted(p for split in ("train", "validation")
                           for p in (source / split / name).iterdir()) for name in CLASSES}
    for index in range(count):
        name = CLASSES[index % 2]
        photo = photos[name][(index // 2) % len(photos[name])]
        target = root / name / f"{index:06d}-{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(photo, target)
        except OSError:
            target.symlink_to(photo.resolve())
    return root


def measure(folder, mode, cache_dir, size, steps, batch):
    """One process's figures, as a dict (run with --measure)."""
    import keras

    from catsdogs.config import AugmentConfig, TrainConfig
    from catsdogs.data import cache
    from catsdogs.data.augment import build_augmenter
    from catsdogs.data.datasets import load_image_data
    from catsdogs.data.tf_pipeline import make_dataset

    decoded, original = [], cache.decode_many

    def counting(paths, *args, **kwargs):
        decoded.extend(paths)
        return original(paths, *args, **kwargs)

    cache.decode_many = counting
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    data = load_image_data(TrainConfig(data=str(folder), cache=mode, cache_dir=str(cache_dir),
                                       keep_epoch="best"), size)
    augmenter = build_augmenter(AugmentConfig(rotation_range=10.0, horizontal_flip=True), seed=0)
    dataset = make_dataset(data.train, batch, augmenter, shuffle_seed=0).repeat()
    model = keras.Sequential([keras.Input((*size, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(16, 3, strides=4, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    batches = iter(dataset)
    model.train_on_batch(*next(batches))
    first_step = time.perf_counter() - started
    timed = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(batches))
    rate = steps * batch / (time.perf_counter() - timed)
    files = len(data.train) + len(data.val) + len(data.calibration)
    # ram decodes every file, every run; none every batch it reads (after a check of every file)
    decodes = {"ram": files, "none": "each read"}.get(mode, len(decoded))
    return {"decoded": decodes, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "first_step_s": first_step, "images_per_s": rate, "pixels": data.storage}


def ram_fits(count, side):
    """Whether `--cache auto` would keep `count` decoded photos in memory (its own rule)."""
    from catsdogs.data.cache import RAM_FACTOR, available_memory

    available = available_memory()
    return available is None or RAM_FACTOR * count * side * side * 3 <= available / 2


def run_measurement(folder, mode, cache_dir, args):
    command = [sys.executable, __file__, "--measure", str(folder), "--mode", mode,
               "--cache-dir", str(cache_dir), "--image-size", str(args.image_size),
               "--steps", str(args.steps), "--batch", str(args.batch), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: a measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000],
                        help="photo counts to measure [2000 8000]")
    parser.add_argument("--image-size", type=int, default=224, help="decoded side [224]")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps [20]")
    parser.add_argument("--batch", type=int, default=32, help="images per step [32]")
    parser.add_argument("--modes", nargs="+", choices=("ram", "disk", "none"),
                        default=["ram", "disk"], help="--cache modes to measure [ram disk]")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, in a child
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = (args.image_size, args.image_size)
    if args.measure:
        import keras  # noqa: F401  (TensorFlow loaded before the clock starts)

        from catsdogs import console

        console.setup(quiet=args.quiet)
        print(json.dumps(measure(Path(args.measure), args.mode, args.cache_dir, size,
                                 args.steps, args.batch)))
        return
    from machine import describe

    print(describe())
    print(f"{args.image_size}x{args.image_size} pixels, batches of {args.batch}, "
          f"{args.steps} timed steps; one process per row")
    print(f"{'photos':>7} {'cache':>5} {'run':>6} {'decoded':>8} {'peak RSS MB':>12} "
          f"{'first step s':>13} {'images/s':>9}")
    for count in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="catsdogs-scale-"))
        try:
            folder = make_folder(work / "photos", count)
            for mode in args.modes:
                if mode == "ram" and not ram_fits(count, args.image_size):
                    print(f"{count:>7} {mode:>5}   (skipped: the decoded pixels would not fit "
                          f"in half the available memory, where --cache auto picks disk)")
                    continue
                for run in ("first", "second"):
                    row = run_measurement(folder, mode, work / "cache", args)
                    print(f"{count:>7} {mode:>5} {run:>6} {row['decoded']:>8} "
                          f"{row['peak_rss_mb']:>12.0f} {row['first_step_s']:>13.1f} "
                          f"{row['images_per_s']:>9.0f}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
