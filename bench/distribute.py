"""Wall time of training with 2 local workers vs 1 process, same data, same global batch.

    python bench/distribute.py [--preset fast-catsdogs] [--epochs 3]

Both runs train --preset on ../shared/data/cats_and_dogs for --epochs, one after the other, in
fresh processes: `catsdogs train` alone (batches of 2B), and `catsdogs train --local-workers 2`
(batches of B on each worker: the same global batch, the learning rate scaled by the 2
replicas). Each is charged its whole wall time (imports, decoding, training, writing). On one
2-core machine two workers share the same cores and add an all-reduce per step, so they are
expected to be slower: this measures that cost; the gain needs more machines.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe, shared_data  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def timed(argv, cwd):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "catsdogs", "train", *argv, "--quiet"],
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"bench: training failed: {result.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker (B)")
    args = parser.parse_args()
    data = shared_data("cats_and_dogs")
    print(describe())
    with tempfile.TemporaryDirectory() as folder:
        common = ["--data", str(data), "--preset", args.preset, "--epochs", str(args.epochs)]
        alone = timed([*common, "--batch-size", str(2 * args.batch_size), "--run-dir",
                       str(Path(folder) / "alone")], folder)
        workers = timed([*common, "--batch-size", str(args.batch_size), "--run-dir",
                         str(Path(folder) / "workers"), "--local-workers", "2"], folder)
        accuracy = {name: json.loads((Path(folder) / name / "metrics.json").read_text())[
            "best_val_accuracy"] for name in ("alone", "workers")}
    print(f"{args.preset}, {args.epochs} epochs, global batch {2 * args.batch_size}")
    print(f"1 process        {alone:7.1f} s   best val accuracy {accuracy['alone']:.3f}")
    print(f"2 local workers  {workers:7.1f} s   best val accuracy {accuracy['workers']:.3f}")
    print(f"2 workers take {workers / alone:.2f}x the time of 1 process on this machine")


if __name__ == "__main__":
    main()
