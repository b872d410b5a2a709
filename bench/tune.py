"""`catsdogs tune` for N minutes against the preset's recipe: test accuracy of each, 2 seeds.

The recipe the search found and the preset's own are each trained with 2 seeds and measured
on the test split.

    python bench/tune.py --preset fast-catsdogs --minutes 60
    python bench/tune.py --minutes 120 --search hyperband --seeds 1 2
    python bench/tune.py --task cifar10 --preset fast-cifar10 --minutes 20   # CIFAR-10's test images as the test split
    python bench/tune.py --preset fast-catsdogs --minutes 30 --final 30

Arms, every run with the selection protocol (`--selection-split 0.15`: the trials are scored
on it, and the data's validation split is a test split nothing is chosen on):
  preset          the preset's recipe as published
  preset-budget   the preset's recipe with as many epochs as fit in N minutes (the epoch time
                  of the search's own preset trial, else of the first `preset` run): the same
                  minutes spent on one longer run
  tuned           the search's best.json, trained again with each seed; with --final M the
                  search ends with its final step (`tune --final M`, run with the first seed,
                  which is that seed's tuned run), best.json holds its epochs, and
                  preset-budget gets the same M minutes
For each: test accuracy per seed, mean ± standard deviation, minutes. Run folders go under
--out and are reused when finished (a stopped bench continues; so does the search).
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe, shared_data  # noqa: E402

SELECTION_SPLIT = 0.15
# task -> (folder under ../shared/data, the settings that read it)
TASKS = {"catsdogs": ("cats_and_dogs", {}), "cifar10": ("cifar10", {"dataset": "cifar10"})}


def finished_run(settings, run_dir):
    """metrics.json of `run_dir`: trained now from `settings`, resumed, or reused."""
    import catsdogs
    from catsdogs import config as cfg

    if (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists():
        pass
    elif (run_dir / "config.json").exists():
        catsdogs.resume(run_dir)
    else:
        catsdogs.train(cfg.TrainConfig(**{**settings, "run_dir": str(run_dir)}))
    return json.loads((run_dir / "metrics.json").read_text())


def epoch_seconds(run_dir):
    from catsdogs import runs

    return statistics.fmean(float(row["seconds"]) for row in runs.read_csv(run_dir / "history.csv"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="catsdogs",
                        help="cats/dogs photos, or CIFAR-10 (its 10,000 test images the test split)")
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--minutes", type=float, default=60, help="the search's budget")
    parser.add_argument("--search", choices=("hyperband", "bayesian", "random"), default="bayesian")
    parser.add_argument("--final", type=float, metavar="M",
                        help="tune --final M: the best recipe trained for M minutes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", default="runs/bench-tune")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    from catsdogs import cli

    folder, task_settings = TASKS[args.task]
    data = shared_data(folder)
    out = Path(args.out)
    print(describe())
    tune_dir = out / "tune"
    code = cli.main(["tune", "--data", str(data), *(f"--{key}={value}" for key, value in
                                                     task_settings.items()),
                     "--preset", args.preset, "--budget",
                     str(args.minutes), "--search", args.search, "--selection-split",
                     str(SELECTION_SPLIT), "--run-dir", str(tune_dir),
                     *(["--final", str(args.final), "--seed", str(args.seeds[0])] if args.final
                       else [])])
    if code:
        raise SystemExit(code)
    tuned = json.loads((tune_dir / "best.json").read_text())
    preset = {"preset": args.preset, "data": str(data), "selection_split": SELECTION_SPLIT,
              **task_settings}
    arms = {"preset": preset, "tuned": tuned}
    search = json.loads((tune_dir / "tune.json").read_text())
    # the epoch time that turns the search's minutes into epochs of the preset's recipe: the
    # search's own preset trial (timed on the same machine while the search ran), else the
    # first `preset` run (a Hyperband search has no preset trial)
    probe = (tune_dir / f"trial-{search['preset_trial']}" if "preset_trial" in search
             else out / f"preset-seed{args.seeds[0]}")
    minutes = args.final or args.minutes  # of the tuned recipe's training: the budget arm's too
    rows = []
    # the budget arm last: it is the longest, and a stopped bench has the others by then
    for arm in ("preset", "tuned", "preset-budget"):
        for seed in args.seeds:
            if arm == "preset-budget":  # the search's minutes on one run of the preset's recipe
                settings = {**preset, "epochs": max(1, int(minutes * 60 // epoch_seconds(probe)))}
            else:
                settings = arms[arm]
            if arm == "tuned" and args.final and seed == args.seeds[0]:  # the search's final
                run_dir = Path(search["final_run"])
                metrics = {**json.loads((run_dir / "metrics.json").read_text()),
                           "test_accuracy": search["test_accuracy"]}
            else:
                run_dir = out / f"{arm}-seed{seed}"
                metrics = finished_run({**settings, "seed": seed}, run_dir)
            rows.append({"arm": arm, "seed": seed, "run": str(run_dir),
                         "epochs": metrics["epochs_run"], "test": metrics["test_accuracy"],
                         "minutes": metrics["train_seconds"] / 60})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "search": search,
                                               "rows": rows}, indent=2))
    print(f"\n{describe()}\n{args.preset} on {data}; search: {args.search}, "
          f"{search['seconds_spent'] / 60:.1f} min, {len(search['trials'])} trials, best "
          f"trial's test accuracy {search.get('test_accuracy', float('nan')):.1%}")
    print(f"{'arm':<15}{'seeds':>6}{'epochs':>8}{'test (mean ± std)':>20}{'minutes':>9}")
    for arm in ("preset", "preset-budget", "tuned"):
        mine = [row for row in rows if row["arm"] == arm]
        tests = [row["test"] for row in mine]
        std = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        print(f"{arm:<15}{len(mine):>6}{mine[0]['epochs']:>8}"
              f"{f'{statistics.fmean(tests):.1%} ± {std:.1%}':>20}"
              f"{statistics.fmean(row['minutes'] for row in mine):>9.1f}")


if __name__ == "__main__":
    main()
