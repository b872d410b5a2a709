"""Recipe screens under the protocol that cannot flatter: one preset, several training
settings, each run chosen on a selection split and measured once on the test split.

    python bench/recipes.py --variants base lookahead [--preset resnet-catsdogs] [--epochs 32]
                            [--seed 42] [--out runs/bench-recipes]

Each variant is a name from VARIANTS (TrainConfig fields over the preset's recipe). Runs go
one after the other into OUT/<variant>-seed<seed>/; one that finished (its bench.json) is
reused, so a killed screen continues with the same command and only the runs not done train.
Prints, per variant: the selection-split accuracy of the chosen epoch and of the last one, the
test accuracy plain and with each test-time augmentation (the same chosen model), the wall
seconds of training plus the plain test evaluation (decoding and run-folder writes included),
and the achieved training GFLOP/s. The budget the cats/dogs accuracy target sets is 20 minutes of
wall time on 2 cores; `--epochs` sets every variant's epoch count (default: the preset's).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from catsdogs import runs  # noqa: E402
from catsdogs.inference.tta import TTA_MODES  # noqa: E402
from machine import describe, shared_data  # noqa: E402
from train import print_protocol_table, protocol_row  # noqa: E402  (bench/train.py)

VARIANTS = {
    "base": {},
    "lookahead": {"lookahead": True},  # weight averaging (airbench's lookahead)
    "mixup": {"mixup": 0.2},
    "cutmix": {"cutmix": 1.0},
    "randaugment": {"rand_augment": 2},
    "ema": {"ema": 0.99},  # an average over ~100 steps: about 2 epochs of 1,700 photos
    "small-start": {"progressive_start": 0.43},  # longer low-resolution phase
}
TASK_DATA = {"folder": (("cats_and_dogs",), "validation"), "cifar10": (("cifar10",), "test")}


def run_variant(name, args, root, test_dir):
    """Train one variant (or reuse its finished run); its protocol row, computed again from
    the run folder and the wall seconds its bench.json keeps."""
    run_dir = Path(args.out) / f"{name}-seed{args.seed}"
    done = run_dir / "bench.json"
    if not done.exists():
        config = catsdogs.TrainConfig(preset=args.preset, dataset=args.dataset, data=str(root),
                                      selection_split=args.selection_split, epochs=args.epochs,
                                      seed=args.seed, run_dir=str(run_dir), **VARIANTS[name])
        started = time.perf_counter()
        catsdogs.train(config)
        wall = time.perf_counter() - started  # includes the one plain test evaluation
        done.write_text(json.dumps({"variant": name, "seed": args.seed, "seconds": wall,
                                    "settings": VARIANTS[name]}, indent=2))
    kept = json.loads(done.read_text())
    missing = [mode for mode in TTA_MODES if f"test_{mode}_tta" not in kept]
    for mode in missing:  # the chosen model with each test-time augmentation
        kept[f"test_{mode}_tta"] = catsdogs.evaluate(run_dir / runs.MODEL_FILE, test_dir,
                                                     tta=mode)["accuracy"]
    if missing:
        done.write_text(json.dumps(kept, indent=2))
    return {**kept, **protocol_row(args.preset, finished_run(run_dir), kept["seconds"])}


def finished_run(run_dir):
    """A run folder as the Run that catsdogs.train returned for it."""
    read = lambda name: json.loads((run_dir / name).read_text())  # noqa: E731
    return catsdogs.Run(run_dir, None, read(runs.CLASS_NAMES_FILE),
                        runs.read_csv(run_dir / runs.HISTORY_FILE), read(runs.METRICS_FILE))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["base"])
    parser.add_argument("--preset", default="resnet-catsdogs")
    parser.add_argument("--dataset", choices=TASK_DATA, default="folder")
    parser.add_argument("--epochs", type=int, help="every variant's epochs [default: the preset's]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--selection-split", type=float, default=0.15)
    parser.add_argument("--out", default="runs/bench-recipes")
    args = parser.parse_args()
    folders, test_split = TASK_DATA[args.dataset]
    root = shared_data(*folders)
    print(describe(), flush=True)
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, args, root, root / test_split))
        print(f"done: {name} test {rows[-1]['test']:.1%} in {rows[-1]['seconds']:.0f} s", flush=True)
    print(f"\n{describe()}\n{args.preset}, epochs chosen on {args.selection_split:.0%} of the "
          f"training images, test = {test_split}/ (used once per run), seed {args.seed}")
    print_protocol_table(rows, first="variant")


if __name__ == "__main__":
    main()
