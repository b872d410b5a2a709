"""`train --seeds N`: the same settings trained with N seeds, their spread, and their ensemble.

One run's accuracy is one draw: two identical runs of one recipe can land points apart on
new photos. N runs give the mean and standard deviation a claim needs, and their ensemble
(inference/ensemble.py) is the model to use: the mean of N calibrated members is more
accurate and better calibrated than a typical member.

The folder holds seed-<s>/ (ordinary run folders), ensemble/ and seeds.json. Killed, the same
command with the same --run-dir skips the finished seeds and resumes the one that was running.
"""

import dataclasses
import statistics
from pathlib import Path

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.console import quiet_retracing

SEEDS_FILE = "seeds.json"


def train_seeds(config, count, folder):
    """Train `config` with seeds config.seed .. config.seed + count - 1 into `folder`, then
    write their ensemble. Returns the dict seeds.json holds."""
    from catsdogs.data.datasets import DecodedSources
    from catsdogs.inference.ensemble import ensemble_of
    from catsdogs.training.train import finish_run

    folder = Path(folder)
    members = []
    decoded = DecodedSources()  # every seed trains on the same photos: decoded once
    with runs.run_folder_lock(folder):  # one command at a time in it: its seeds are its own
        for seed in range(config.seed, config.seed + count):
            run_dir = folder / f"seed-{seed}"
            with quiet_retracing():  # every seed compiles a new model's functions
                # the same photos held out by every member: their ensemble calibrates on them
                finish_run(dataclasses.replace(config, seed=seed, split_seed=config.roles_seed,
                                               run_dir=str(run_dir)), decoded=decoded)
            members.append(run_dir)
        ensemble_dir = ensemble_of(members, folder / "ensemble")
        rows = [{"seed": config.seed + i, "run": str(path),
                 **_figures(cfg.load_json(path / runs.METRICS_FILE))}
                for i, path in enumerate(members)]
        result = {"runs": rows, "ensemble": str(ensemble_dir), **_spread(rows)}
        runs.write_json(folder / SEEDS_FILE, result)
    return result


def _figures(metrics):
    keys = ("kept_epoch", "kept_val_accuracy", "test_accuracy", "temperature")
    return {key: metrics.get(key) for key in keys}


def _spread(rows):
    """Mean and sample standard deviation of each figure that every run has."""
    spread = {}
    for key in ("kept_val_accuracy", "test_accuracy"):
        values = [row[key] for row in rows if row[key] is not None]
        if len(values) == len(rows) and len(values) > 1:
            spread[f"{key}_mean"] = statistics.fmean(values)
            spread[f"{key}_std"] = statistics.stdev(values)
    return spread


def summary_lines(result):
    """What the command prints: one line per seed, the spread, and where the ensemble is."""
    # val_accuracy, not "held-out": where the epoch was chosen, these photos chose it
    lines = [f"seed {row['seed']}: kept epoch {row['kept_epoch']}, its val_accuracy "
             f"{row['kept_val_accuracy']:.4f}"
             + (f", test accuracy {row['test_accuracy']:.4f}" if row["test_accuracy"] is not None
                else "") for row in result["runs"]]
    for key, name in (("test_accuracy", "test accuracy"),
                      ("kept_val_accuracy", "kept epochs' val_accuracy")):
        if f"{key}_mean" in result:
            lines.append(f"{name} over {len(result['runs'])} seeds: "
                         f"{result[f'{key}_mean']:.4f} ± {result[f'{key}_std']:.4f} (mean ± std)")
            break
    lines.append(f"Ensemble of the {len(result['runs'])} runs: {result['ensemble']} "
                 f"(evaluate it: catsdogs evaluate {result['ensemble']} DATA)")
    return lines
