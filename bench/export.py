"""Every export format against the Keras float model: size, images/s, validation accuracy.

    python -m catsdogs.train --data ../shared/data/cats_and_dogs --run-dir runs/catsdogs-full
    python bench/export.py --run runs/catsdogs-full

Exports the run's model to every format in a temporary folder, then runs each in its own
runtime (TensorFlow, LiteRT, onnxruntime) on ../shared/data/cats_and_dogs/validation in this
one process, and prints each as ratios against the Keras model. Target for int8 TFLite:
>= 2x the Keras model's images/s, <= 1/3 of its size, <= 1 point lower accuracy.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from machine import describe, shared_data  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder trained on cats_and_dogs")
    args = parser.parse_args()
    validation = shared_data("cats_and_dogs", "validation")
    from catsdogs.inference.export import check

    print(describe())
    with tempfile.TemporaryDirectory() as out:
        written = catsdogs.export(args.run, ["all"], out=out)
        results = check(written, validation)
    base = next(r for r in results if r["format"] == "keras")
    print(f"{'format':<12}{'MB':>8}{'size':>8}{'images/s':>10}{'speed':>8}{'accuracy':>10}"
          f"{'vs keras':>10}{'agreement':>11}")
    for row in results:
        print(f"{row['format']:<12}{row['bytes'] / 1e6:>8.2f}{row['bytes'] / base['bytes']:>7.2f}x"
              f"{row['images_per_second']:>10.0f}{row['images_per_second'] / base['images_per_second']:>7.2f}x"
              f"{row['accuracy']:>10.1%}{(row['accuracy'] - base['accuracy']) * 100:>+9.1f}pt"
              f"{row['agreement']:>11.1%}")


if __name__ == "__main__":
    main()
