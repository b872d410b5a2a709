"""Speed levers for training on this CPU, each against plain float32 in the same process.

    python bench/levers.py [--preset seed-catsdogs] [--steps 12]

Training steps per second on synthetic batches (the input pipeline is measured separately by
bench/pipeline.py), for: XLA (`jit_compile=True`), mixed precision (`mixed_bfloat16`), and
larger batches. A lever is adopted by catsdogs only where it helps here.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402,F401  (sets the Keras backend)
from machine import describe  # noqa: E402


def images_per_second(preset_name, batch_size, steps, jit_compile=False, policy="float32"):
    import keras

    from catsdogs.models.presets import get_preset

    preset = get_preset(preset_name)
    keras.config.set_dtype_policy(policy)  # this script's own process: nothing else shares it
    try:
        model = preset.build(2)
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size * steps, *preset.image_size, 3)).astype(np.float32)
    y = rng.integers(0, 2, batch_size * steps)
    model.fit(x[: batch_size * 2], y[: batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed-catsdogs")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print(describe())
    base = images_per_second(args.preset, 32, args.steps)
    print(f"{args.preset}, float32, batch 32, no XLA        {base:7.1f} images/s  1.00x")
    for label, kwargs in (("XLA (jit_compile=True)", {"jit_compile": True}),
                          ("mixed_bfloat16", {"policy": "mixed_bfloat16"}),
                          ("batch 64", {"batch_size": 64}), ("batch 128", {"batch_size": 128})):
        batch = kwargs.pop("batch_size", 32)
        rate = images_per_second(args.preset, batch, max(4, args.steps * 32 // batch), **kwargs)
        print(f"{args.preset}, {label:<32}{rate:7.1f} images/s  {rate / base:4.2f}x")


if __name__ == "__main__":
    main()
