"""Start a preset's model from weights trained elsewhere (`--weights PATH|RUN_DIR`).

Three sources, one rule: the network's layers with weights, up to its head, are matched in
order with the stored ones, and the first layer whose shapes differ is named in one error line
(Keras' own loaders stop at the first bad variable without saying whose).

- a catsdogs run folder: its model.keras, layer by layer up to the head; its head too when its
  class names are the same (a network pretrained on a big folder starts a small one);
- a Keras 3 `.weights.h5` (`model.save_weights`, of the whole model or of a keras.applications
  backbone): each layer's variables read where Keras' saver put them (`layers/<class>_<i>`);
- a Keras 2 style `.h5` (keras.applications' `*_notop.h5`): its `layer_names` order, as Keras'
  legacy loader reads it.
"""

import difflib
import json
from pathlib import Path

from catsdogs import runs
from catsdogs.config import NAMED_WEIGHTS
from catsdogs.errors import CatsDogsError

SOURCES_FIX = ("give none, imagenet, a Keras weights file (*_notop.h5, .weights.h5) or a "
               "catsdogs run folder")


def check_source(weights):
    """A --weights that is not a named start must be an .h5 file or a run folder with a model:
    said at once, before any image is decoded."""
    if weights in NAMED_WEIGHTS:
        return
    path = Path(weights)
    if path.is_dir() and not (path / runs.MODEL_FILE).is_file():
        raise CatsDogsError(f"not a catsdogs run folder (no {runs.MODEL_FILE})", where=path,
                            fix=SOURCES_FIX)
    if path.is_file() and path.suffix != ".h5":
        raise CatsDogsError("not a Keras weights file (expected .h5 or .weights.h5)", where=path,
                            fix=SOURCES_FIX)
    if path.is_file() and not is_hdf5(path):
        raise CatsDogsError("not a Keras weights file: no HDF5 signature (a page saved instead "
                            "of the file, or a cut download?)", where=path, fix=SOURCES_FIX)
    if not path.exists():
        match = difflib.get_close_matches(str(weights), NAMED_WEIGHTS, n=1)
        raise CatsDogsError("no such weights file or run folder", where=path,
                            fix=f"did you mean {match[0]!r}?" if match else SOURCES_FIX)


def is_hdf5(path):
    """Whether `path` starts an HDF5 file: its signature at byte 0, or after a user block (512,
    1024, ... bytes, the places the format allows). A file that cannot be read is one line."""
    signature = b"\x89HDF\r\n\x1a\n"
    try:
        with open(path, "rb") as file:
            for offset in (0, 512, 1024, 2048, 4096):
                file.seek(offset)
                if file.read(len(signature)) == signature:
                    return True
    except OSError as error:
        raise CatsDogsError(f"cannot read the weights file: {error.strerror}", where=path,
                            fix="check its permissions") from None
    return False


def head_of(model):
    """The probability head: every preset's last layer (presets.probability_head)."""
    return model.layers[-1]


def body_layers(model):
    """The layers with weights before the head, in order, nested models (a keras.applications
    backbone) opened: what every source is matched against."""
    return list(_with_weights(model.layers[:-1]))


def _with_weights(layers):
    import keras

    for layer in layers:
        if isinstance(layer, keras.Model):
            yield from _with_weights(layer.layers)
        elif layer.weights:
            yield layer


def start_model(preset, class_names, weights):
    """The preset's model for `class_names`, started as `weights` says.

    Args:
        preset: a presets.Preset.
        class_names: the run's classes (a run folder's head is kept when its are the same).
        weights: "none", "imagenet", a weights file or a run folder.

    Returns:
        (model, note): note says what was loaded, for the log; "" for a named start.

    Raises:
        CatsDogsError: a source that does not fit the network, naming its first layer that does not.
    """
    model = preset.build(len(class_names), "imagenet" if weights == "imagenet" else "none")
    if weights in NAMED_WEIGHTS:
        return model, ""
    path = Path(weights)
    if path.is_dir():
        return model, _copy_from_run(model, path, class_names)
    return model, _load_file(model, path)


# ---------------------------------------------------------------- matching


SAME_NETWORK = ("start from weights of the same preset (the tutorial CNNs: at the same "
                "--image-size too, their Dense layer grows with it)")


def _copy_in_order(targets, stored, where):
    """Set each target layer from the stored (name, arrays) at its position; the first that
    does not fit is one error line naming it."""
    for position, layer in enumerate(targets):
        want = [tuple(w.shape) for w in layer.weights]
        if position >= len(stored):
            raise CatsDogsError(f"the weights end before layer {layer.name!r} (the network has "
                                f"{len(targets)} layers with weights, the file {len(stored)})",
                                where=where, fix=SAME_NETWORK)
        name, arrays = stored[position]
        got = [tuple(a.shape) for a in arrays]
        if got != want:
            raise CatsDogsError(f"layer {layer.name!r} does not match: it has shapes {want}, "
                                f"the weights' {name!r} {got}", where=where,
                                fix=SAME_NETWORK)
    if len(stored) > len(targets):
        raise CatsDogsError(f"the weights hold {len(stored) - len(targets)} more layers than "
                            f"the network, from {stored[len(targets)][0]!r}", where=where,
                            fix=SAME_NETWORK)
    for layer, (_, arrays) in zip(targets, stored):
        layer.set_weights(arrays)


def _copy_from_run(model, run_dir, class_names):
    """The run's body; its head when it was trained on the same classes."""
    from catsdogs.models.keras_files import load_keras_model

    source = load_keras_model(run_dir / runs.MODEL_FILE)
    _copy_in_order(body_layers(model), [(layer.name, layer.get_weights())
                                        for layer in body_layers(source)], run_dir)
    try:
        source_classes = json.loads((run_dir / runs.CLASS_NAMES_FILE).read_text())
    except (OSError, ValueError):
        source_classes = None
    if source_classes == list(class_names):
        head_of(model).set_weights(head_of(source).get_weights())
        return f"body and head from {run_dir} (the same classes)"
    return f"body from {run_dir}, a new head ({len(class_names)} classes)"


def _load_file(model, path):
    import h5py

    try:
        with h5py.File(path, "r") as file:
            if "layer_names" in file.attrs or "model_weights" in file:
                _load_legacy_h5(model, file.get("model_weights", file), path)
            else:
                _load_keras3_h5(model, file, path)
    except (OSError, KeyError) as error:  # KeyError: an HDF5 file without Keras' layout
        raise CatsDogsError(f"cannot read the weights file ({type(error).__name__}: {error})",
                            where=path, fix=SOURCES_FIX) from None
    return f"body from {path}, a new head"


def _backbone(model):
    """A keras.applications backbone nested in the model, or None."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def _load_legacy_h5(model, group, path):
    """keras.applications' *_notop.h5: layers with weights in the file's own order."""
    stored = []
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else name
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in group[name].attrs["weight_names"]]
        if names:
            stored.append((name, [group[name][n][()] for n in names]))
    backbone = _backbone(model)
    targets = list(_with_weights(backbone.layers)) if backbone is not None else body_layers(model)
    _copy_in_order(targets, stored, path)


def _saver_paths(container, prefix=""):
    """(layer, path) for each layer with weights, at the path Keras' saver gives it: the layer's
    class in snake case, numbered within its container (saving_lib names layers this way, not by
    their names, which differ between two builds of one model)."""
    import keras
    from keras.src.utils.naming import to_snake_case

    used = {}
    for layer in container.layers:
        name = to_snake_case(type(layer).__name__)
        used[name] = used.get(name, -1) + 1
        path = f"{prefix}layers/{name}" + (f"_{used[name]}" if used[name] else "")
        if isinstance(layer, keras.Model):
            yield from _saver_paths(layer, path + "/")
        elif layer.weights:
            yield layer, path


def _load_keras3_h5(model, file, path):
    """A `.weights.h5` of the whole model or of its keras.applications backbone."""
    head = head_of(model)
    backbone = _backbone(model)
    whole = [(layer, key) for layer, key in _saver_paths(model) if layer is not head]
    rooted = list(_saver_paths(backbone)) if backbone is not None else []
    pairs = rooted if rooted and rooted[0][1] in file and whole[0][1] not in file else whole
    stored = []
    for layer, key in pairs:
        if f"{key}/vars" not in file:
            break
        variables = file[f"{key}/vars"]
        stored.append((key, [variables[str(i)][()] for i in range(len(variables))]))
    _copy_in_order([layer for layer, _ in pairs], stored, path)
