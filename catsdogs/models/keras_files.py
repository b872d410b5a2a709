"""Keras model files read as untrusted input: a `.keras` or `.h5` someone hands over may name
code to run on load. Every path that loads a file it did not just write itself (a model to
predict with, a run to start another from) goes through `load_keras_model`."""

import json
import zipfile

from catsdogs.errors import CatsDogsError

KERAS_MODULES = ("keras", "keras_hub")  # top-level packages a .keras config may name


def load_keras_model(path):
    """The Keras model of a `.keras` (or `.h5`) file: refused if its config names a module
    outside Keras, loaded in Keras' safe mode, and one CatsDogsError line for a file that
    cannot be read."""
    _refuse_foreign_modules(path)
    import keras

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise CatsDogsError("refused to load: the model holds code (a Lambda layer) that "
                                "would run on load", where=path,
                                fix="rebuild it without Lambda layers; catsdogs never loads "
                                    "models with safe_mode=False") from None
        raise CatsDogsError(f"cannot load the model: {error}", where=path) from None
    except (OSError, KeyError, TypeError) as error:
        raise CatsDogsError(f"not a readable Keras model file ({type(error).__name__})",
                            where=path, fix="pass a run folder, a .keras or .h5 file or a "
                                            "SavedModel folder") from None
    return model


def _foreign_modules(config):
    """Every `module` a Keras config names outside Keras itself (nested anywhere)."""
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and module.split(".")[0] not in KERAS_MODULES:
            yield module
        for value in config.values():
            yield from _foreign_modules(value)
    elif isinstance(config, list):
        for value in config:
            yield from _foreign_modules(value)


def _refuse_foreign_modules(path):
    """Read the archive's config.json first: a `.keras` whose model names a module outside
    Keras (`os`, `subprocess`, a package of its own) is refused before Keras imports anything.
    Keras' safe mode fails on such files too, but with a multi-line TypeError that does not
    say why; this says which module. An `.h5` file (no zip archive) has no such config: Keras'
    safe mode is its guard."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return  # not a readable archive: keras.saving.load_model says so
    # what load_model(compile=False) builds: the optimizer in compile_config is never read
    # (a run trained with --optimizer sgd names catsdogs.optim there)
    foreign = sorted(set(_foreign_modules({key: value for key, value in config.items()
                                           if key != "compile_config"})))
    if foreign:
        raise CatsDogsError(f"refused to load: the model names code outside Keras "
                            f"(module {', '.join(map(repr, foreign))})", where=path,
                            fix="load only .keras files made by catsdogs or plain Keras")
