"""Speed levers for training on this CPU, each against plain float32 in the same process.

    python bench/levers.py [--preset seed-catsdogs] [--steps 12]

Training steps per second on synthetic batches (the input pipeline is measured separately by
bench/pipeline.py), for: XLA (`jit_compile=True`), mixed precision (`mixed_bfloat16`), and
larger batches. A lever is adopted by catsdogs only where it helps here.

    python bench/levers.py --efficiency

Achieved training GFLOP/s per recommended preset at its image size and batch, and
resnet-catsdogs at the sides its progressive resizing passes through, each for ~20 s of
synthetic steps: how well each network's arithmetic uses the cores, apart from the pipeline.
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402,F401  (sets the Keras backend)
from machine import describe  # noqa: E402


def build(preset_name, policy="float32", side=None):
    """The preset's model (at `side` x `side` pixels when given: a progressive-resizing epoch)."""
    import keras

    from catsdogs.models.presets import get_preset

    preset = get_preset(preset_name)
    if side:
        preset = dataclasses.replace(preset, image_size=(side, side))
    keras.config.set_dtype_policy(policy)  # this script's own process: nothing else shares it
    try:
        return preset.build(2)
    finally:
        keras.config.set_dtype_policy("float32")


def images_per_second(preset_name, batch_size, steps, jit_compile=False, policy="float32",
                      side=None):
    """Training images/s of the preset on synthetic batches (and the model measured)."""
    import keras

    model = build(preset_name, policy, side)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size * steps, *model.input_shape[1:3], 3)).astype(np.float32)
    y = rng.integers(0, 2, batch_size * steps)
    model.fit(x[: batch_size * 2], y[: batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - started), model


# (preset, image side, batch): each recommended preset at its size and batch, and
# resnet-catsdogs at the sides its progressive resizing trains through
EFFICIENCY = [("air-cifar10", 32, 500), ("fast-cifar10", 32, 64), ("fast-catsdogs", 96, 32),
              ("resnet-catsdogs", 64, 32), ("resnet-catsdogs", 88, 32),
              ("resnet-catsdogs", 112, 32), ("resnet-catsdogs", 112, 128)]


def efficiency(seconds_per_row=20):
    """Achieved training GFLOP/s (forward FLOPs x 3 x images/s) per preset and image side, on
    synthetic batches: the model's arithmetic alone, without the input pipeline."""
    from catsdogs.models.presets import count_flops

    print(f"{'preset':<18}{'side':>5}{'batch':>6}{'MFLOPs':>8}{'images/s':>10}{'GFLOP/s':>9}")
    for preset, side, batch in EFFICIENCY:
        probe, _ = images_per_second(preset, batch, 2, side=side)
        steps = max(2, round(seconds_per_row * probe / batch))
        rate, model = images_per_second(preset, batch, steps, side=side)
        flops = count_flops(model)
        print(f"{preset:<18}{side:>5}{batch:>6}{flops / 1e6:>8.0f}{rate:>10.1f}"
              f"{flops * 3 * rate / 1e9:>9.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed-catsdogs")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--efficiency", action="store_true",
                        help="instead: achieved GFLOP/s of each recommended preset and size")
    args = parser.parse_args()
    print(describe())
    if args.efficiency:
        return efficiency()
    base, _ = images_per_second(args.preset, 32, args.steps)
    print(f"{args.preset}, float32, batch 32, no XLA        {base:7.1f} images/s  1.00x")
    for label, kwargs in (("XLA (jit_compile=True)", {"jit_compile": True}),
                          ("mixed_bfloat16", {"policy": "mixed_bfloat16"}),
                          ("batch 64", {"batch_size": 64}), ("batch 128", {"batch_size": 128})):
        batch = kwargs.pop("batch_size", 32)
        rate, _ = images_per_second(args.preset, batch, max(4, args.steps * 32 // batch), **kwargs)
        print(f"{args.preset}, {label:<32}{rate:7.1f} images/s  {rate / base:4.2f}x")


if __name__ == "__main__":
    main()
