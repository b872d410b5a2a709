"""The search space of `catsdogs tune`: the ranges declared beside the settings themselves
(config.py's `setting(search=...)`), resolved for one preset, narrowed or widened by a
`--space FILE.json`, as KerasTuner HyperParameters; and a trial's values as a TrainConfig.

A range lives with its setting, so a new setting that should be searched says so in one
place, and this module has no list of names to keep in step with config.py.
"""

import dataclasses
import difflib
import math

from catsdogs import config as cfg
from catsdogs.errors import CatsDogsError

KINDS = ("log", "linear", "int", "choice", "scale", "scales")  # how a range is written (config.setting)
EPOCHS = "epochs"  # Hyperband sets it per trial (its "tuner/epochs"), so it is not searched then
HYPERBAND_EPOCHS = "tuner/epochs"


def declared_ranges():
    """{setting: its declared range} over TrainConfig and its AugmentConfig (whose settings are
    flat flags too, so their names are unique)."""
    return {field.name: field.metadata["search"]
            for cls in (cfg.TrainConfig, cfg.AugmentConfig) for field in dataclasses.fields(cls)
            if field.metadata.get("search") is not None}


def _augment_names():
    return {field.name for field in dataclasses.fields(cfg.AugmentConfig)}


def setting_value(config, name):
    """`name`'s value in a resolved TrainConfig (augmentation settings inside `augment`; the
    image size, None for the preset's own, as the side the run trains at)."""
    value = getattr(config.augment if name in _augment_names() else config, name)
    if name == "image_size" and value is None:
        from catsdogs.models.presets import preset_of

        return preset_of(config).image_size[0]
    return value


def preset_ranges(base, preset, fixed=(), overrides=None, source="--space"):
    """The ranges searched for a resolved TrainConfig `base` of `preset`.

    Args:
        base: the resolved TrainConfig every trial starts from; "scale" ranges multiply its values.
        preset: its Preset: a keras.applications body has no width to scale, a body that needs
            its full image size no progressive resizing.
        fixed: settings the user gave (flags or --config): not searched.
        overrides: a --space file's {setting: range | value | null}: a range replaces the
            declared one (or adds a setting), a value fixes the setting, null drops it.

    Returns:
        {setting: ("log" | "linear" | "int", lo, hi) | ("choice", v1, ...) | ("fixed", v)}.
    """
    ranges = declared_ranges()
    if preset.pretrainable or base.weights != "none":  # a pretrained body has its width
        ranges.pop("width", None)
    if not preset.any_size:
        ranges.pop("progressive_start", None)
    if not preset.any_size or base.downloads_cifar10:
        ranges.pop("image_size", None)  # the downloaded CIFAR-10 arrays are 32x32 alone
    if base.lookahead:  # --ema and --lookahead both average the weights
        ranges.pop("ema", None)
    if not base.fine_tune_epochs:  # no second stage: no rate of its own
        ranges.pop("fine_tune_learning_rate", None)
    for name in fixed:
        ranges.pop(name, None)
    known = {f.name for f in dataclasses.fields(cfg.TrainConfig)} | _augment_names()
    for name, value in (overrides or {}).items():
        if name not in known:
            raise CatsDogsError(f"unknown setting {name!r}", where=source,
                                fix=_close_match(name, known))
        if value is None:
            ranges.pop(name, None)
        elif isinstance(value, list) and value and value[0] in KINDS:
            ranges[name] = tuple(value)
        elif isinstance(value, list) and value and isinstance(value[0], str):
            raise _bad(name, value, f"a range [KIND, ...] with KIND one of {', '.join(KINDS)}",
                       source)
        else:
            ranges[name] = ("fixed", value)
    resolved = {name: _resolve(name, spec, setting_value(base, name), source)
                for name, spec in ranges.items()}
    _check_values(base, resolved, source)
    return resolved


def _check_values(base, ranges, source):
    """Every fixed value, choice and both ends of every range pass the settings' own checks
    (TrainConfig's), so a bad one is refused now rather than failing every trial in turn."""
    for name, (kind, *values) in ranges.items():
        for value in values:
            try:
                trial_config(base, {name: value}, "trial")
            except CatsDogsError as error:
                raise CatsDogsError(f"{name} {value!r} in the search space: {error.what}",
                                    where=source, fix=error.fix or "see docs/training.md, "
                                                                   "Tuning") from None


def _resolve(name, spec, preset_value, source):
    """A range as KerasTuner takes it: "scale" and "scales" made absolute, every range checked."""
    kind, *values = spec
    if kind == "fixed":
        return spec
    if kind == "scales":
        if not values or not all(cfg.is_number(v) and v > 0 for v in values) \
                or not cfg.is_number(preset_value) or preset_value <= 0:
            raise _bad(name, spec, "[\"scales\", F1, F2, ...] of factors > 0 of a numeric "
                                   f"preset value (the preset's is {preset_value!r})", source)
        scaled = (preset_value * v for v in values)
        return ("choice", *dict.fromkeys(
            max(1, round(v)) if isinstance(preset_value, int) else v for v in scaled))
    if kind == "choice":
        if not values or len({type(v) for v in values}) != 1:
            raise _bad(name, spec, "[\"choice\", V1, V2, ...] of one type", source)
        return (kind, *values)
    if len(values) != 2 or not all(cfg.is_number(v) for v in values) \
            or not values[0] <= values[1]:
        raise _bad(name, spec, f"[\"{kind}\", LO, HI] with LO <= HI", source)
    lo, hi = values
    if kind == "scale":
        if not cfg.is_number(preset_value) or preset_value <= 0 or lo <= 0:
            raise _bad(name, spec, "a range of its own: the preset's value is "
                                   f"{preset_value!r}, nothing to scale", source)
        if isinstance(preset_value, int):
            return "int", max(1, round(preset_value * lo)), max(1, round(preset_value * hi))
        return "log", preset_value * lo, preset_value * hi
    if kind == "log" and lo <= 0:
        raise _bad(name, spec, "[\"log\", LO, HI] with 0 < LO <= HI", source)
    if kind == "int":
        return kind, int(lo), int(hi)
    return kind, float(lo), float(hi)


def _close_match(name, known):
    match = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean {match[0]!r}?" if match else "a setting of catsdogs train"


def _bad(name, spec, expected, source):
    return CatsDogsError(f"bad range for {name}: expected {expected}, received {list(spec)!r}",
                         where=source, fix="see docs/training.md, Tuning")


def hyperparameters(ranges, hyperband=False, base=None):
    """A keras_tuner.HyperParameters of `ranges`; with Hyperband `epochs` is left to it. With
    `base` (the resolved TrainConfig), each one's default is base's value, brought into its
    range (a choice it is not among: KerasTuner's default), so the defaults are the preset's
    own recipe as near as the ranges allow (the search's first trial, tune.make_oracle)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, (kind, *values) in ranges.items():
        if hyperband and name == EPOCHS:
            continue
        own = None if base is None else setting_value(base, name)
        if kind == "fixed" or len(set(values)) == 1:
            hp.Fixed(name, values[0])
        elif kind == "choice" and all(isinstance(v, bool) for v in values):
            hp.Boolean(name, default=bool(own))  # Choice would make True and False 1 and 0
        elif kind == "choice":
            hp.Choice(name, values, ordered=all(isinstance(v, (int, float)) for v in values),
                      default=own if own in values else None)
        elif kind == "int":
            hp.Int(name, values[0], values[1], sampling="log" if values[0] > 0 else "linear",
                   default=_within(own, values, int))
        else:
            hp.Float(name, values[0], values[1], sampling=kind,
                     default=_within(own, values, float))
    return hp


def _within(value, bounds, kind):
    """`value` brought into [lo, hi] as `kind`, or None (KerasTuner's default) if no number."""
    if not cfg.is_number(value) or not math.isfinite(value):
        return None
    return kind(min(max(value, bounds[0]), bounds[1]))


def epochs_range(ranges, base):
    """(fewest, most) epochs a trial may train: Hyperband's max_epochs is the most."""
    kind, *values = ranges.get(EPOCHS, ("fixed", base.epochs))
    return (values[0], values[0]) if kind == "fixed" else (min(values), max(values))


def trial_config(base, values, run_dir):
    """The TrainConfig of a trial: `base` with the trial's `values` (Hyperband's epochs
    as `epochs`), writing into `run_dir`."""
    values = dict(values)
    if HYPERBAND_EPOCHS in values:
        values[EPOCHS] = values[HYPERBAND_EPOCHS]
    values = {name: value for name, value in values.items() if not name.startswith("tuner/")}
    augment_names = _augment_names()
    augment = {name: value for name, value in values.items() if name in augment_names}
    top = {name: value for name, value in values.items() if name not in augment_names}
    for name in ("epochs", "batch_size", "rand_augment"):
        if name in top and isinstance(top[name], float) and math.isfinite(top[name]):
            top[name] = round(top[name])
    settings = cfg.merge(cfg.to_dict(base), top, {"augment": augment}, {"run_dir": str(run_dir)})
    return cfg.from_dict(cfg.TrainConfig, settings, source="the trial's settings")
