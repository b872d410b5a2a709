"""Decoding folders once before training: threads vs forked worker processes (images.decode_many).

    python bench/decode.py [--repeats 3]

Decodes ../shared/data/cifar10/train (50,000 32x32 JPEGs) and ../shared/data/cats_and_dogs/train
(2,000 photos, to 150x150) with decode_many both ways, in this one process, alternating, and
prints the median files/s of each and the ratio. TensorFlow is imported first, as in training.
Every file is read from the page cache after the first pass (a warm-up pass is not timed).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402,F401  (sets the Keras backend)
from machine import describe, shared_data  # noqa: E402

THREADS_ONLY = 10**12  # processes_from above any folder: decode_many keeps to threads


def files_per_second(paths, size, processes_from):
    from catsdogs.data.images import decode_many

    started = time.perf_counter()
    decode_many(paths, size, progress=False, processes_from=processes_from)
    return len(paths) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each [3]")
    args = parser.parse_args()

    import keras  # noqa: F401  (as in training: TensorFlow is loaded when decoding starts)

    from catsdogs.data.datasets import scan_class_folders
    from catsdogs.data.images import PROCESSES_FROM

    print(describe())
    for name, size in (("cifar10", (32, 32)), ("cats_and_dogs", (150, 150))):
        _, paths, _, _ = scan_class_folders(shared_data(name, "train"))
        files_per_second(paths, size, PROCESSES_FROM)  # warm-up: the page cache
        rates = {"threads": [], "processes": []}
        for _ in range(args.repeats):
            rates["threads"].append(files_per_second(paths, size, THREADS_ONLY))
            rates["processes"].append(files_per_second(paths, size, PROCESSES_FROM))
        threads, processes = (statistics.median(rates[k]) for k in ("threads", "processes"))
        print(f"{name}/train, {len(paths)} files to {size[0]}x{size[1]}:")
        print(f"  threads                      {threads:8.0f} files/s  1.00x   "
              f"({len(paths) / threads:.1f} s)")
        print(f"  forked worker processes      {processes:8.0f} files/s  {processes / threads:.2f}x   "
              f"({len(paths) / processes:.1f} s)")


if __name__ == "__main__":
    main()
