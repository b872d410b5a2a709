"""What every benchmark prints beside its numbers: machine, versions, date, data location."""

import os
import platform
import sys
import time
from pathlib import Path

# the real data sets (../shared/data); BENCH_DATA points elsewhere, for a machine that holds
# a copy of them in another place
SHARED_DATA = Path(os.environ.get("BENCH_DATA") or
                   Path(__file__).resolve().parent.parent.parent / "shared" / "data")


def cpu_model():
    """The CPU's model name and its widest vector extension: two VMs both called "AMD EPYC"
    (one AVX2, one AVX-512) train the same network at speeds 2-3x apart."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    flags = next((set(line.split(":", 1)[1].split()) for line in lines
                  if line.startswith("flags")), set())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{model} ({vector})" if vector else model


def describe():
    """One line: CPU, cores, accelerator, Python, TensorFlow (or the Keras backend that trains
    without it: catsdogs/backends.py), Keras, date."""
    import keras

    from catsdogs.backends import tensorflow_trains

    if tensorflow_trains():
        import tensorflow as tf

        framework = f"TensorFlow {tf.__version__}"
    else:
        framework = f"Keras backend {keras.backend.backend()} (no TensorFlow in training)"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores{accelerator()}; Python "
            f"{platform.python_version()}, {framework}, Keras {keras.__version__}; "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def accelerator():
    """', GPU: NAME' for the first GPU the Keras backend sees, else ''."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        return f", GPU: {gpus[0].device_kind}" if gpus else ""
    return ""


def shared_data(*parts):
    """A folder of ../shared/data, or exit with a plain message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        sys.exit(f"bench: {path} is absent; benchmarks need the full data sets in ../shared/data")
    return path


def training_flops(flops_per_image, metrics, history=(), full_side=None):
    """Training arithmetic of a finished run: forward FLOPs per image x 3 (forward and
    backward) x the images its epochs saw, each progressive-resizing epoch charged at its
    side (see training_gflops_per_second). A budget in these units means the same on every
    machine; minutes do not."""
    sides = [float(row["image_side"]) for row in history if row.get("image_side")]
    if full_side and len(sides) == metrics["epochs_run"]:
        epochs = sum((side / full_side) ** 2 for side in sides)
    else:
        epochs = metrics["epochs_run"]
    return flops_per_image * 3 * metrics["train_images"] * epochs


def training_gflops_per_second(flops_per_image, metrics, history=(), full_side=None):
    """Achieved training GFLOP/s of a finished run: forward FLOPs per image x 3 (forward and
    backward) x the images its epochs saw / its training seconds (metrics.json's).

    With progressive resizing (history rows with an `image_side`, and the model's `full_side`)
    each epoch is charged the FLOPs of the side it trained at, (side / full side)^2 of the
    full-size count: counting full size for every epoch would credit a run with arithmetic it
    never did."""
    flops = training_flops(flops_per_image, metrics, history, full_side)
    return flops / metrics["train_seconds"] / 1e9
