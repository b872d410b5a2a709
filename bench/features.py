"""Stage one on features computed once against the frozen body run every epoch: the speed-up.

    python bench/features.py                # mobilenetv3-catsdogs on the cats/dogs photos
    python bench/features.py --preset efficientnetb0-catsdogs --epochs 10
    python bench/features.py --quick        # a tiny generated folder: the script runs

Both arms train the head alone on the same frozen body for `--epochs`, with no augmentation
and the same seed: `--cache-features` (the body runs once over the photos, the head trains on
its outputs) and `--no-cache-features` (the body runs over every batch of every epoch). The
body starts from the preset's network as built, saved to a weights file here: no download, and
a frozen body costs the same whatever its weights. Each arm's wall seconds cover the whole
`train` call (decoding, the features, the epochs, the finish); its epochs' seconds are
history.csv's (the features' time counted in the first). Printed side by side with their ratio,
and the last validation loss of each (they train the same head, so the two agree). The two run
folders go to `--out`, where the rows' "run" paths name them.
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

import numpy as np  # noqa: E402

import catsdogs  # noqa: E402
from catsdogs.config import AugmentConfig  # noqa: E402
from machine import describe, shared_data  # noqa: E402

ARMS = (("features once", True), ("body every epoch", False))


def generated_folder(root, per_class=8, side=64):
    """train/ and validation/ of two classes of noisy flat colours (--quick)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("validation", per_class // 2)):
        for name, colour in (("cats", (200, 120, 60)), ("dogs", (60, 120, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 30, (side, side, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.png")
    return root


def body_weights(preset_name, folder):
    """The preset's network as built, saved: the frozen body both arms start from."""
    from catsdogs.models.presets import get_preset

    path = folder / f"{preset_name}.weights.h5"
    get_preset(preset_name).build(2).save_weights(path)
    return path


def arm(args, data, weights, cache_features, run_dir):
    """One arm's figures: wall seconds of the train call, its epochs' seconds, its last row."""
    started = time.perf_counter()
    run = catsdogs.train(catsdogs.TrainConfig(
        preset=args.preset, data=str(data), weights=str(weights), epochs=args.epochs,
        batch_size=args.batch_size, augment=AugmentConfig(), cache_features=cache_features,
        keep_epoch="last", seed=args.seed, run_dir=str(run_dir)))
    wall = time.perf_counter() - started
    epochs = sum(float(row["seconds"]) for row in run.history)
    return {"wall_seconds": round(wall, 1), "epoch_seconds": round(epochs, 1),
            "first_epoch_seconds": float(run.history[0]["seconds"]),
            "val_loss": float(run.history[-1]["val_loss"]), "run": str(run.dir)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilenetv3-catsdogs")
    parser.add_argument("--epochs", type=int, default=5, help="head epochs [default: 5]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", help="[default: ../shared/data/cats_and_dogs]")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny generated folder and 2 epochs: checks the script, measures "
                             "nothing")
    parser.add_argument("--out", default="runs/bench-features",
                        help="where the runs go [default: runs/bench-features]")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        out = Path(args.out)
        if args.quick:
            args.epochs = min(args.epochs, 2)
            data = generated_folder(scratch / "images")
        else:
            data = Path(args.data) if args.data else shared_data("cats_and_dogs")
        weights = body_weights(args.preset, scratch)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        rows = {}
        for name, cache_features in ARMS:
            run_dir = out / f"{args.preset}-{'features' if cache_features else 'slow'}-{stamp}"
            rows[name] = arm(args, data, weights, cache_features, run_dir)
            print(json.dumps({"arm": name, **rows[name]}), flush=True)
    fast, slow = rows["features once"], rows["body every epoch"]
    print(f"\n{describe()}\n{args.preset}, head alone for {args.epochs} epochs on {data}"
          f"{' (--quick: a tiny generated folder, not a measurement)' if args.quick else ''}")
    print(f"{'':<17}{'features once':>15}{'body every epoch':>18}{'ratio':>8}")
    for key, label in (("wall_seconds", "wall seconds"), ("epoch_seconds", "epochs' seconds")):
        print(f"{label:<17}{fast[key]:>15.1f}{slow[key]:>18.1f}"
              f"{slow[key] / max(fast[key], 1e-9):>7.1f}x")
    print(f"{'last val_loss':<17}{fast['val_loss']:>15.4f}{slow['val_loss']:>18.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "preset": args.preset,
                                               "epochs": args.epochs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
