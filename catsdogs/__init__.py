"""catsdogs: train, evaluate, export and use CNN image classifiers (cats vs dogs, CIFAR-10).

    import catsdogs
    run = catsdogs.train(catsdogs.TrainConfig(data="data/cats_and_dogs", epochs=5))
    classifier = catsdogs.load(run.dir)
    report = catsdogs.evaluate(classifier, "data/cats_and_dogs/validation")
    catsdogs.export(classifier, ["tflite-int8", "onnx"], out="exports/")

The API is plain functions of the stage packages (training/, inference/), imported on first
use, so `import catsdogs` and every `--help` stay quick (no Keras, no TensorFlow).
"""

import importlib
import os

# The product is Keras 3 on TensorFlow (tf.data, SavedModel, TFLite); set before Keras loads.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from catsdogs import stderr_filter  # noqa: E402

stderr_filter.install()  # and what that setting cannot keep out (the module says why)

from catsdogs.config import AugmentConfig, TrainConfig  # noqa: E402
from catsdogs.errors import CatsDogsError  # noqa: E402

__version__ = "0.2.0"

# public name -> (module, attribute), imported when first asked for
_API = {"train": ("catsdogs.training.train", "train"),
        "resume": ("catsdogs.training.train", "resume"),
        "Run": ("catsdogs.training.train", "Run"),
        "load": ("catsdogs.inference.classifier", "load"),
        "Classifier": ("catsdogs.inference.classifier", "Classifier"),
        "evaluate": ("catsdogs.inference.evaluate", "evaluate"),
        "export": ("catsdogs.inference.export", "export")}

__all__ = ["AugmentConfig", "CatsDogsError", "TrainConfig", *_API]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'catsdogs' has no attribute {name!r}")
    module_name, attribute = _API[name]
    return getattr(importlib.import_module(module_name), attribute)


def __dir__():
    return sorted([*globals(), *_API])
