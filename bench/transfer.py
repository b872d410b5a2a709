"""Does a network pretrained on CIFAR-10 start cats vs dogs better than scratch? Two stages vs none.

    python bench/transfer.py --preset fast-catsdogs --seeds 1 2
    python bench/transfer.py --preset fast-catsdogs --pretrain-epochs 10 --head-epochs 2 --fine-tune-epochs 9
    python bench/transfer.py --preset fast-catsdogs --pretrain-epochs 4 --keep-epoch best
    python bench/transfer.py --pretrained runs/bench-transfer/fast-catsdogs-cifar10-pretrain --fine-tune-epochs 30
    python bench/transfer.py --preset hires-catsdogs --pretrain-image-size 64 --pretrain-epochs 10 --fine-tune-epochs 48
    python bench/transfer.py --pretrained RUN --preset hires-catsdogs --fine-tune-learning-rate 1e-3

First one pretraining run of `--preset` on ../shared/data/cifar10/train (a class folder: its
images scaled up to the preset's size or `--pretrain-image-size`: the body pools globally, so
its weights fit the preset's own size; 10 % held out to choose its epoch). Then, per seed, on
../shared/data/cats_and_dogs:
- scratch:  `--weights none`, `--epochs` = head + fine-tune epochs (the same number of epochs);
- transfer: `--weights <pretraining run>` (its body, a new head), `--epochs` head epochs with the
  body frozen, then `--fine-tune-epochs` with it unfrozen at a tenth of the rate (or at
  `--fine-tune-learning-rate`).
Every cats/dogs run uses the selection protocol (`--selection-split 0.15`): the last epoch is
kept (`--keep-epoch best`: the best, chosen on half of the 15 % of the training photos held
out), the temperature fitted on photos that chose nothing, and the
data's validation split is the test split, read once. It prints each run's test accuracy and
expected calibration error, each arm's mean ± sample standard deviation over seeds, and the
difference transfer - scratch per seed. Run folders go to `--out`, named by arm, kept epoch,
epochs and seed, and are reused when finished.
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
from machine import describe, shared_data  # noqa: E402
from seeds import spread, test_figures  # noqa: E402

SELECTION_SPLIT = 0.15


def finished(run_dir, config):
    """Train `config` into `run_dir`, resume it, or reuse it when finished; wall seconds or None."""
    if (run_dir / "metrics.json").exists():
        return None
    started = time.perf_counter()
    if (run_dir / "checkpoints").exists():
        catsdogs.resume(run_dir)
    else:
        catsdogs.train(config)
    return time.perf_counter() - started


def pretrain(args):
    """The CIFAR-10 run whose body starts the transfer arm (`--pretrained`'s when given)."""
    size = f"-{args.pretrain_image_size}px" if args.pretrain_image_size else ""
    run_dir = Path(args.pretrained or Path(args.out) / f"{args.preset}-cifar10-pretrain{size}")
    seconds = finished(run_dir, catsdogs.TrainConfig(
        preset=args.preset, data=str(shared_data("cifar10", "train")), val_split=0.1,
        epochs=args.pretrain_epochs, image_size=args.pretrain_image_size, seed=args.seeds[0],
        run_dir=str(run_dir)))
    return run_dir, seconds


def arm_config(args, arm, seed, root, run_dir, pretrained):
    """The cats/dogs settings of one arm and seed."""
    common = dict(preset=args.preset, data=str(root), selection_split=SELECTION_SPLIT,
                  keep_epoch=args.keep_epoch, seed=seed, run_dir=str(run_dir))
    if arm == "scratch":
        return catsdogs.TrainConfig(**common, epochs=args.head_epochs + args.fine_tune_epochs)
    return catsdogs.TrainConfig(**common, weights=str(pretrained), epochs=args.head_epochs,
                                fine_tune_epochs=args.fine_tune_epochs,
                                fine_tune_learning_rate=args.fine_tune_learning_rate)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--pretrain-epochs", type=int, help="default: the preset's")
    parser.add_argument("--pretrain-image-size", type=int, metavar="N",
                        help="pretrain at NxN [default: the preset's size]")
    parser.add_argument("--head-epochs", type=int, default=2,
                        help="transfer: epochs of the head alone [default: 2]")
    parser.add_argument("--fine-tune-epochs", type=int, default=9,
                        help="transfer: epochs with the body unfrozen [default: 9]")
    parser.add_argument("--fine-tune-learning-rate", type=float, metavar="RATE",
                        help="transfer: the body's rate [default: a tenth of the preset's]")
    parser.add_argument("--keep-epoch", choices=("last", "best"), default="last",
                        help="the epoch each cats/dogs run keeps [default: last]")
    parser.add_argument("--pretrained", metavar="RUN",
                        help="reuse this finished (or resumable) pretraining run folder")
    parser.add_argument("--out", default="runs/bench-transfer")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    root = shared_data("cats_and_dogs")
    test_dir = root / "validation"
    print(describe())
    pretrained, seconds = pretrain(args)
    print(json.dumps({"pretrain": str(pretrained), "seconds": seconds}), flush=True)
    rows = []
    for seed in args.seeds:
        for arm in ("scratch", "transfer"):
            epochs = args.head_epochs + args.fine_tune_epochs
            # a transfer run's name says its pretraining's size: another size is another run
            start = f"-{args.pretrain_image_size}px" if arm == "transfer" and \
                args.pretrain_image_size else ""
            if arm == "transfer" and args.fine_tune_learning_rate:  # another rate, another run
                start += f"-lr{args.fine_tune_learning_rate:g}"
            run_dir = (Path(args.out) /
                       f"{args.preset}-{arm}{start}-{args.keep_epoch}-{epochs}ep-seed{seed}")
            seconds = finished(run_dir, arm_config(args, arm, seed, root, run_dir, pretrained))
            metrics = json.loads((run_dir / "metrics.json").read_text())
            rows.append({"arm": arm, "seed": seed, "run": str(run_dir), "seconds": seconds,
                         "train_seconds": metrics["train_seconds"],
                         "kept_epoch": metrics.get("kept_epoch", metrics["best_epoch"]),
                         **test_figures(run_dir, test_dir)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))
    print(f"\n{describe()}\n{args.preset}: pretrained on {shared_data('cifar10', 'train')}; "
          f"selection split {SELECTION_SPLIT:.0%}, test = {test_dir}")
    for arm in ("scratch", "transfer"):
        single = [row for row in rows if row["arm"] == arm]
        print(f"{arm:<9} test {spread([r['test'] for r in single])}, ECE "
              f"{spread([r['ece_calibrated'] for r in single])} over {len(single)} seeds")
    by_seed = {(r["arm"], r["seed"]): r["test"] for r in rows}
    gains = [by_seed["transfer", s] - by_seed["scratch", s] for s in args.seeds]
    print("transfer - scratch per seed: " + ", ".join(f"{g:+.1%}" for g in gains))


if __name__ == "__main__":
    main()
