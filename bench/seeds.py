"""The spread over seeds: which model a run keeps, how calibrated it is, and what an ensemble adds.

    python bench/seeds.py --preset fast-catsdogs --seeds 1 2 3 --keep-epoch best last
    python bench/seeds.py --task cifar10 --preset air-cifar10 --seeds 1 2 3 --keep-epoch last

Every run uses the selection protocol (`--selection-split 0.15`): the epoch (for `--keep-epoch best`)
is chosen on 15 % of the training images, the temperature is fitted on photos that chose
nothing (train.py), and the data's own validation split (cats/dogs) or test split (CIFAR-10)
is the test split, on which nothing is chosen. Every seed holds out the same photos (the split
seed is the first seed, as `train --seeds` does), so the ensemble fits its own temperature on
photos none of its members trained or chose on. Per run it prints the accuracy on the held-out
photos (what a lever is chosen on), the test accuracy, the expected calibration error (15 bins)
on the test split raw and with the run's own temperature, and the temperature's decision; per
protocol the mean ± sample standard deviation over seeds; then the ensemble of each protocol's
runs (`catsdogs ensemble`, the mean of the members' calibrated probabilities) on the same test
split. Run folders go to `--out` and are reused when finished, so a stopped bench continues
where it stopped.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from machine import describe, shared_data, training_flops  # noqa: E402

TASKS = {"catsdogs": ("cats_and_dogs", "folder", "validation"),
         "cifar10": ("cifar10", "cifar10", "test")}
SELECTION_SPLIT = 0.15


def test_photos(classifier, test_dir):
    """(pixels, labels in the model's class order) of the test split's folder."""
    from catsdogs.data.datasets import load_labelled_folder

    names, split = load_labelled_folder(test_dir, classifier.image_size)
    to_model = [classifier.class_names.index(n) for n in names]
    return split.pixels, [to_model[label] for label in split.labels]


def test_figures(model_dir, test_dir):
    """Accuracy and ECE (raw, with the model's own temperature) on the test split."""
    from catsdogs.inference.calibrate import expected_calibration_error

    classifier = catsdogs.load(model_dir)
    pixels, labels = test_photos(classifier, test_dir)
    raw = classifier.probabilities(pixels, calibrated=False)
    calibrated = classifier.probabilities(pixels)
    return {"test": float((calibrated.argmax(axis=1) == labels).mean()),
            "ece_raw": expected_calibration_error(raw, labels),
            "ece_calibrated": expected_calibration_error(calibrated, labels),
            "temperature": classifier.temperature}


def finished_runs_parser(doc):
    """The command line of a bench that measures finished run folders on a test split:
    RUN... --test DIR [--json FILE]."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--test", type=Path, required=True, help="the test split's folder")
    parser.add_argument("--json", help="also write the rows to this file")
    return parser


def split_seed(args):
    return args.seeds[0] if args.split_seed is None else args.split_seed


def train_once(args, root, keep, seed):
    """One finished run folder (trained now, or reused) and its wall seconds."""
    run_dir = Path(args.out) / f"{args.preset}-{keep}-seed{seed}"
    if (run_dir / "metrics.json").exists() and (not args.refit or
                                                (run_dir / "refit" / "metrics.json").exists()):
        return run_dir, None
    if (run_dir / "checkpoints").exists():
        started = time.perf_counter()
        catsdogs.resume(run_dir)
        return run_dir, time.perf_counter() - started
    dataset = TASKS[args.task][1]
    config = catsdogs.TrainConfig(preset=args.preset, data=str(root), dataset=dataset,
                                  selection_split=SELECTION_SPLIT, keep_epoch=keep, seed=seed,
                                  split_seed=split_seed(args), epochs=args.epochs,
                                  refit=args.refit, ema=args.ema, weight_decay=args.weight_decay,
                                  image_size=args.image_size,
                                  progressive_start=args.progressive_start,
                                  run_dir=str(run_dir))
    started = time.perf_counter()
    catsdogs.train(config)
    return run_dir, time.perf_counter() - started


def run_pflop(run_dir, metrics):
    """The run's training arithmetic in PFLOP (machine.training_flops), at the size its own
    settings trained (a reused run folder may predate this command's --image-size)."""
    from catsdogs import runs
    from catsdogs.config import read_run_config
    from catsdogs.models.presets import count_flops, preset_of

    preset = preset_of(read_run_config(run_dir / runs.CONFIG_FILE))
    flops = count_flops(preset.build(len(json.loads((run_dir / runs.CLASS_NAMES_FILE).read_text()))))
    history = runs.read_csv(run_dir / runs.HISTORY_FILE)
    return training_flops(flops, metrics, history, preset.image_size[0]) / 1e15


def spread(values, percent=None):
    """mean ± sample standard deviation; as percentages for `percent` (default: figures over 0.2,
    accuracies, not calibration errors)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    percent = max(values) > 0.2 if percent is None else percent
    return f"{mean:.1%} ± {std:.1%}" if percent else f"{mean:.3f} ± {std:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="catsdogs")
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--keep-epoch", dest="keep", nargs="+", choices=("best", "last"), default=["best", "last"])
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--split-seed", type=int,
                        help="the seed of the photos' roles [the first of --seeds]; give it to "
                             "run one seed per process beside the others")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="train with an exponential moving average of the weights (--ema)")
    parser.add_argument("--weight-decay", type=float,
                        help="train with this decoupled weight decay (--weight-decay) [the preset's]")
    parser.add_argument("--image-size", type=int,
                        help="train at this side (--image-size) [the preset's]")
    parser.add_argument("--progressive-start", type=float,
                        help="train from this fraction of the size (--progressive-start) "
                             "[the preset's]")
    parser.add_argument("--refit", action="store_true",
                        help="after each run, --refit: train again on its training and selection "
                             "photos for the chosen epochs; the refit model (RUN/refit) is "
                             "measured and ensembled")
    parser.add_argument("--out", default="runs/bench-seeds")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    folder, _, test_name = TASKS[args.task]
    root = shared_data(folder)
    test_dir = root / test_name
    print(describe())
    rows, members = [], {}
    for keep in args.keep:
        for seed in args.seeds:
            run_dir, seconds = train_once(args, root, keep, seed)
            # with --refit, the run (its kept epoch) and the refit model a user would ship
            for protocol, model_dir in [(keep, run_dir)] + (
                    [(f"{keep}+refit", run_dir / "refit")] if args.refit else []):
                metrics = json.loads((model_dir / "metrics.json").read_text())
                row = {"keep": protocol, "seed": seed, "run": str(model_dir), "seconds": seconds,
                       "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs_run"],
                       "train_pflop": run_pflop(model_dir, metrics),
                       "kept_epoch": metrics.get("kept_epoch", metrics["best_epoch"]),
                       # the held-out (selection) photos' accuracy: what a lever is chosen on
                       "held_out": metrics.get("kept_val_accuracy", metrics["best_val_accuracy"]),
                       "decision": metrics.get("temperature_decision"),
                       **test_figures(model_dir, test_dir)}
                rows.append(row)
                members.setdefault(protocol, []).append(model_dir)
                print(json.dumps(row), flush=True)
    for keep, runs in members.items():
        if len(runs) < 2:
            continue
        out = Path(args.out) / f"{args.preset}-{keep}-ensemble-{'-'.join(map(str, args.seeds))}"
        if not (out / "model.keras").exists():
            from catsdogs.inference.ensemble import write_ensemble

            write_ensemble(runs, out)
        decision = json.loads((out / "calibration.json").read_text()).get("decision")
        rows.append({"keep": keep, "seed": "ensemble", "run": str(out), "decision": decision,
                     **test_figures(out, test_dir)})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))
    print(f"\n{describe()}\n{args.preset}, selection split {SELECTION_SPLIT:.0%}, test = "
          f"{test_dir}")
    print(f"{'keep':<11}{'seed':>10}{'epochs':>7}{'kept':>6}{'PFLOP':>7}{'held-out':>9}"
          f"{'test':>8}{'ECE raw':>9}{'ECE cal.':>10}{'T':>7}{'train s':>9}")
    for row in rows:
        print(f"{row['keep']:<11}{row['seed']!s:>10}{row.get('epochs', '-')!s:>7}"
              f"{row.get('kept_epoch', '-')!s:>6}{row.get('train_pflop', float('nan')):>7.3f}"
              f"{format(row['held_out'], '.1%') if 'held_out' in row else '-':>9}{row['test']:>8.1%}"
              f"{row['ece_raw']:>9.4f}{row['ece_calibrated']:>10.4f}"
              f"{row['temperature']:>7.3f}{row.get('train_seconds', float('nan')):>9.0f}")
    for keep in members:
        single = [row for row in rows if row["keep"] == keep and row["seed"] != "ensemble"]
        if single:
            print(f"{keep}: held-out {spread([r['held_out'] for r in single])}, test "
                  f"{spread([r['test'] for r in single])}, ECE raw "
                  f"{spread([r['ece_raw'] for r in single])}, calibrated "
                  f"{spread([r['ece_calibrated'] for r in single])} over {len(single)} seeds")


if __name__ == "__main__":
    main()
