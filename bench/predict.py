"""Images/s of `catsdogs.predict` vs the loop users write by hand, same model, same photos.

    python bench/predict.py [--limit 1000] [--repeats 3]

The naive loop is what tutorials show: `keras.utils.load_img` + `model.predict` one image at
a time. catsdogs decodes in parallel threads and classifies in batches. Both classify
../shared/data/cats_and_dogs/validation with one seed-catsdogs model (untrained: speed does
not depend on the weights), in this one process, after a warm-up call each. The naive loop
runs once over --limit photos (a minute: its rate is steady); catsdogs.predict takes about
three seconds for the whole folder, so it runs --repeats times and the median is reported
(single runs of it vary by about ±10 % on this VM).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from machine import describe, shared_data  # noqa: E402


def naive_rate(model, paths):
    import keras

    def classify(path):
        image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(150, 150)))
        return model.predict(image[None], verbose=0)

    classify(paths[0])  # warm-up
    started = time.perf_counter()
    for path in paths:
        classify(path)
    return len(paths) / (time.perf_counter() - started)


def catsdogs_rate(model_dir, folder, count, repeats):
    classifier = catsdogs.load(model_dir)
    classifier.predict_folder(next(folder.rglob("*.jpg")), progress=False)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows, _ = classifier.predict_folder(folder, progress=False)
        assert len(rows) == count
        rates.append(count / (time.perf_counter() - started))
    print("catsdogs.predict runs: " + ", ".join(f"{rate:.1f}" for rate in rates) + " images/s")
    return sorted(rates)[len(rates) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="photos timed for the naive loop")
    parser.add_argument("--repeats", type=int, default=3, help="catsdogs runs; the median is kept")
    args = parser.parse_args()
    folder = shared_data("cats_and_dogs", "validation")
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    print(describe())
    from catsdogs.models.presets import get_preset

    with tempfile.TemporaryDirectory() as model_dir:
        model = get_preset("seed-catsdogs").build(2)
        model.save(Path(model_dir) / "model.keras")
        (Path(model_dir) / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
        ours = catsdogs_rate(model_dir, folder, len(paths), args.repeats)
        naive = naive_rate(model, paths[: args.limit])
    print(f"naive loop (load_img + model.predict per image)  {naive:7.1f} images/s   1.00x")
    print(f"catsdogs.predict ({len(paths)} photos, median of {args.repeats})   {ours:7.1f} images/s  "
          f"{ours / naive:5.1f}x")


if __name__ == "__main__":
    main()
