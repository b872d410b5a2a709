"""How accuracy grows with width: one preset at several widths (`train --width`) on cats vs
dogs, with the same data, epochs and recipe.

    python bench/scaling.py                                   # fast-catsdogs at x0.25 ... x2
    python bench/scaling.py --preset resnet-catsdogs --widths 0.5 1 --epochs 20

Each run chooses its epoch on a 15 % selection split of ../shared/data/cats_and_dogs/train and
is measured once on the validation folder as a test split (bench/train.py's protocol). Runs go
into --out (runs/bench-scaling/<preset>-width-<F>[-epochs-<N>]); a finished one there is
reused and a killed one resumed, so bench/compress.py --sweep can put the same runs on its
frontier. Prints, per width: parameters,
MFLOPs per image, the selection and test accuracy, training seconds and achieved GFLOP/s
(FLOPs per image x 3 x images / training seconds).
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from catsdogs import runs  # noqa: E402
from machine import describe, shared_data, training_gflops_per_second  # noqa: E402

SELECTION_SPLIT = 0.15


def sweep_run(data, preset, width, epochs, out):
    """The finished run of `preset` at `width` (and `epochs`, None: the preset's) in `out`:
    trained now, resumed where a killed sweep left it, or reused."""
    run_dir = Path(out) / (f"{preset}-width-{width:g}" + (f"-epochs-{epochs}" if epochs else ""))
    if (run_dir / runs.METRICS_FILE).is_file() and not (run_dir / runs.CHECKPOINTS_DIR).exists():
        return run_dir
    if (run_dir / runs.CONFIG_FILE).is_file():
        catsdogs.resume(run_dir)
    else:
        catsdogs.train(catsdogs.TrainConfig(data=str(data), preset=preset, width=width,
                                            epochs=epochs, selection_split=SELECTION_SPLIT,
                                            run_dir=str(run_dir)))
    return run_dir


def row(run_dir):
    """Width, size, cost, accuracy and speed of one finished run, from its own files."""
    import keras

    from catsdogs.models.presets import count_flops

    config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    model = keras.saving.load_model(run_dir / runs.MODEL_FILE, safe_mode=True, compile=False)
    flops = count_flops(model)
    return {"width": config.get("width", 1.0), "parameters": model.count_params(),
            "mflops": flops / 1e6, "selection": metrics["best_val_accuracy"],
            "test": metrics["test_accuracy"], "seconds": metrics["train_seconds"],
            "gflops_per_second": training_gflops_per_second(flops, metrics)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--out", default="runs/bench-scaling", help="where the runs go")
    args = parser.parse_args()
    data = shared_data("cats_and_dogs")
    print(describe())
    rows = [row(sweep_run(data, args.preset, width, args.epochs, args.out))
            for width in args.widths]
    print(f"\n{args.preset}, epochs chosen on {SELECTION_SPLIT:.0%} of the training photos, test "
          f"= the validation folder, used once")
    print(f"{'width':>6}{'params':>12}{'MFLOPs':>9}{'selection':>11}{'test':>8}{'train s':>9}"
          f"{'GFLOP/s':>9}")
    for r in rows:
        print(f"{r['width']:>5g}x{r['parameters']:>12,}{r['mflops']:>9.0f}{r['selection']:>11.1%}"
              f"{r['test']:>8.1%}{r['seconds']:>9.0f}{r['gflops_per_second']:>9.1f}")


if __name__ == "__main__":
    main()
