"""What every benchmark prints beside its numbers: machine, versions, date, data location."""

import os
import platform
import sys
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe():
    """One line: CPU, cores, Python, TensorFlow, Keras, date."""
    import keras
    import tensorflow as tf

    return (f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")


def shared_data(*parts):
    """A folder of ../shared/data, or exit with a plain message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        sys.exit(f"bench: {path} is absent; benchmarks need the full data sets in ../shared/data")
    return path


def training_gflops_per_second(flops_per_image, metrics):
    """Achieved training GFLOP/s of a finished run: forward FLOPs per image x 3 (forward and
    backward) x the images its epochs saw / its training seconds (metrics.json's)."""
    images = metrics["train_images"] * metrics["epochs_run"]
    return flops_per_image * 3 * images / metrics["train_seconds"] / 1e9
