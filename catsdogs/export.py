"""Model files for serving. Training writes `model.keras` and `saved_model/` through here.

Each format is written beside its destination and swapped in, so an interrupted export never
leaves a half-written model where a good one was.
"""

from pathlib import Path

from catsdogs import runs


def write_keras(model, path):
    """The native Keras archive, written atomically."""
    with runs.atomic_path(path) as temp:
        model.save(temp)


def write_saved_model(model, path):
    """A TensorFlow SavedModel (signature `serving_default`: pixels 0..255 -> probabilities)."""
    def write(folder):
        model.export(str(folder), format="tf_saved_model", verbose=False)

    runs.replace_dir(Path(path), write)
