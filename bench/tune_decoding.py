"""A search's photos decoded once for all its trials, against decoded again for each trial.

    python bench/tune_decoding.py                          # fast-cifar10 on CIFAR-10, 3 trials of 2 epochs
    python bench/tune_decoding.py --trials 4 --epochs 3 --rounds 2

The same `catsdogs tune` search (random, a fixed seed, the epochs fixed so that every trial
trains as long) runs twice per round in one process, side by side: once as catsdogs runs it
(datasets.DecodedSources: the first trial decodes, the others and the final test reuse), once
with a fresh DecodedSources for every load (each trial and the final test decode again, as
before the change). The arms alternate their order from round to round. It prints each
search's wall seconds and the ratio per round.
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

from machine import describe, shared_data  # noqa: E402


def each_time():
    """A DecodedSources that keeps nothing: every load decodes, as every run did before."""
    from catsdogs.data.datasets import DecodedSources

    class DecodedEachTime(DecodedSources):
        def load(self, config, image_size, shard):
            return DecodedSources().load(config, image_size, shard)

    return DecodedEachTime


def search_seconds(args, folder, space_file):
    """Wall seconds of one whole search (its trials and the final test)."""
    from catsdogs import cli

    started = time.perf_counter()
    code = cli.main(["tune", "--dataset", "cifar10", "--data", str(shared_data("cifar10")),
                     "--preset", args.preset, "--search", "random", "--trials", str(args.trials),
                     "--space", str(space_file), "--run-dir", str(folder), "--quiet"])
    if code != 0:
        raise SystemExit(f"the search in {folder} failed")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast-cifar10")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="every trial's epochs (fixed)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    from catsdogs.training import tune

    print(describe(), flush=True)
    once = tune.DecodedSources
    with tempfile.TemporaryDirectory() as scratch:
        space_file = Path(scratch) / "space.json"
        space_file.write_text(json.dumps({"epochs": args.epochs}))
        for round_ in range(args.rounds):
            arms = [("decoded once", once), ("decoded per trial", each_time())]
            seconds = {}
            for name, kind in arms if round_ % 2 == 0 else arms[::-1]:
                tune.DecodedSources = kind  # the one name RecipeTuner builds its sources from
                folder = Path(scratch) / f"round{round_}-{name.replace(' ', '-')}"
                seconds[name] = search_seconds(args, folder, space_file)
                print(f"round {round_ + 1}: {name:<18} {seconds[name]:7.1f} s", flush=True)
            tune.DecodedSources = once
            print(f"round {round_ + 1}: {args.trials} trials of {args.epochs} epochs, "
                  f"per trial / once = "
                  f"{seconds['decoded per trial'] / seconds['decoded once']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
