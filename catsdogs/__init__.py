"""catsdogs: train, evaluate, export and use CNN image classifiers (cats vs dogs, CIFAR-10).

    import catsdogs
    run = catsdogs.train(catsdogs.TrainConfig(data="data/cats_and_dogs", epochs=5))

Heavy parts (Keras, TensorFlow) load on first use, so `import catsdogs` and `--help` are quick.
"""

import importlib
import os

# The product is Keras 3 on TensorFlow (tf.data, SavedModel, TFLite); set before Keras loads.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from catsdogs.config import AugmentConfig, TrainConfig  # noqa: E402
from catsdogs.errors import CatsDogsError  # noqa: E402

# name -> (module, attribute); attribute None means the module itself, which is callable
# (see callable_module.py), so `catsdogs.train(config)` and `python -m catsdogs.train` share one name.
_LAZY = {"train": ("catsdogs.train", None), "resume": ("catsdogs.train", "resume"),
         "Run": ("catsdogs.train", "Run"), "load": ("catsdogs.classifier", "load"),
         "Classifier": ("catsdogs.classifier", "Classifier"),
         "evaluate": ("catsdogs.evaluate", None), "export": ("catsdogs.export", None)}

__all__ = ["AugmentConfig", "CatsDogsError", "TrainConfig", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'catsdogs' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
