"""Structured pruning: remove whole channels, rebuild the narrower network, copy the kept weights
(the library of `catsdogs prune`).

Keras 3 has no pruning API (tensorflow-model-optimization works with tf-keras only), and
zeroing single weights makes neither a smaller file nor a faster model on a CPU; removing whole
convolution channels (and hidden Dense units) does both. Four steps, one function each:

1. `channel_groups`: one walk over the Functional graph finds which channels must go together.
   A Conv2D or Dense starts a group (its outputs). BatchNorm, activations, pooling, dropout and
   scalar Rescaling pass their input's group on; Flatten too (each channel then appears once
   per position). An Add (any element-wise merge) joins its inputs' groups into one: a residual
   shortcut and its branch must keep the same channels, so they are pruned together. A group
   is prunable when every layer producing it is a trainable Conv2D or Dense and it is not the
   model's output; anything else it meets (a concatenation, a nested model such as a
   keras.applications backbone, the frozen whitening stem) keeps its group whole.
2. `channel_scores`: a channel's importance is the L1 norm of its filter (Li et al. 2017,
   "Pruning Filters for Efficient ConvNets"), times |gamma| / sqrt(variance + epsilon) of the
   BatchNorm that normalises it, where one does: BatchNorm undoes a filter's scale, so the
   filter as BatchNorm leaves it is what counts. A shared group adds up its producers' scores.
3. Each prunable group keeps ceil(keep x width) channels (at least one), the highest scoring.
4. `prune_model`: the model's own config with the new widths (`filters`, `units`) rebuilt by
   `keras.Model.from_config` (same layer names, same graph: a plain Functional model that
   safe-mode loading and every export take as is), then every layer's weights sliced: the
   producers' outputs, the BatchNorms on the way, and the inputs of the layers that read the
   channels (a Dense after Flatten loses those rows at every position).
"""

import dataclasses
import math

import numpy as np

from catsdogs.console import log
from catsdogs.errors import CatsDogsError

PRODUCERS = ("Conv2D", "Dense")  # layers whose output channels can be pruned
# layers that keep each channel where it is: their output is their input's group
PASS_THROUGH = ("BatchNormalization", "ReLU", "LeakyReLU", "ELU", "Activation", "MaxPooling2D",
                "AveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling2D", "Dropout",
                "SpatialDropout2D", "GaussianNoise", "ZeroPadding2D", "Cropping2D", "Resizing",
                "Rescaling")
MERGES = ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")
SCALE_FINDERS = ("MaxPooling2D", "AveragePooling2D", "Dropout")  # between a conv and its BatchNorm


def check_keep(keep, where="--keep"):
    """`keep` is a fraction of channels in (0, 1]."""
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise CatsDogsError(f"bad value for {where}: expected a fraction of channels in (0, 1], "
                            f"e.g. 0.5, received {keep!r}", fix="1 keeps every channel")


@dataclasses.dataclass
class Group:
    """Channels kept or dropped together: a Conv2D's or Dense's outputs, joined by merges."""

    width: int
    producers: list  # names of the layers whose outputs these channels are
    prunable: bool = True
    kept: np.ndarray | None = None  # sorted indices of the kept channels; None: all


@dataclasses.dataclass(frozen=True)
class Channels:
    """What the last axis of a tensor holds: a group's channels, each `repeat` times
    (Flatten: position-major, so feature s x width + c is channel c at position s)."""

    group: Group
    repeat: int = 1

    def kept_features(self):
        """Indices of the features that stay; None when all do."""
        kept = self.group.kept
        if kept is None:
            return None
        return (np.arange(self.repeat)[:, None] * self.group.width + kept[None, :]).ravel()


def _sources(value):
    """Names of the layers whose outputs a config's inbound node reads (nested anywhere)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [name for item in value.values() for name in _sources(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _sources(item)]
    return []


def _passes_channels(spec):
    """A layer of PASS_THROUGH whose settings keep channels in place (channels-last, a scalar
    Rescaling, a BatchNorm over the last axis)."""
    config = spec["config"]
    if spec["class_name"] == "Rescaling":
        return all(isinstance(config.get(key, 0), (int, float)) for key in ("scale", "offset"))
    if spec["class_name"] == "BatchNormalization":
        return config.get("axis") in (-1, [-1])
    return config.get("data_format", "channels_last") == "channels_last"


def _width(spec):
    return spec["config"]["filters" if spec["class_name"] == "Conv2D" else "units"]


def channel_groups(model):
    """Walk `model`'s graph (see the module docstring, step 1).

    Returns:
        (groups, inputs): every Group once, and layer name -> Channels of its input's last
        axis (for the layers with a single input).
    """
    specs = model.get_config()["layers"]
    joined = {}  # id(group) -> the group it was merged into
    outputs, inputs = {}, {}

    def find(group):
        while id(group) in joined:
            group = joined[id(group)]
        return group

    def join(first, second):
        first, second = find(first), find(second)
        if first is not second:
            first.producers += second.producers
            first.prunable &= second.prunable
            joined[id(second)] = first
        return first

    def freeze(channels):
        find(channels.group).prunable = False

    for spec in specs:
        name, kind, nodes = spec["name"], spec["class_name"], spec["inbound_nodes"]
        sources = [outputs[source] for source in _sources(nodes)]
        sources = [Channels(find(c.group), c.repeat) for c in sources]
        if len(sources) == 1:
            inputs[name] = sources[0]
        if kind in PRODUCERS and len(nodes) == 1 and len(sources) == 1 and (
                spec["config"].get("groups", 1) == 1
                and spec["config"].get("data_format", "channels_last") == "channels_last"):
            outputs[name] = Channels(Group(_width(spec), [name],
                                           prunable=spec["config"].get("trainable", True)))
        elif kind in PASS_THROUGH and len(sources) == 1 and _passes_channels(spec):
            outputs[name] = sources[0]
        elif (kind == "Flatten" and len(sources) == 1
              and None not in model.get_layer(name).input.shape[1:]):
            positions = math.prod(model.get_layer(name).input.shape[1:-1])
            outputs[name] = Channels(sources[0].group, sources[0].repeat * positions)
        elif kind in MERGES and sources and len({c.repeat for c in sources}) == 1:
            group = sources[0].group
            for other in sources[1:]:
                group = join(group, other.group)
            outputs[name] = Channels(group, sources[0].repeat)
        else:  # InputLayer, or a layer that moves channels about: nothing through it is pruned
            for channels in sources:
                freeze(channels)
            width = model.get_layer(name).output.shape[-1] if kind != "InputLayer" else 0
            outputs[name] = Channels(Group(width or 0, [], prunable=False))
    ends = model.get_config()["output_layers"]  # [name, 0, 0], or a list of those
    for end in [ends] if isinstance(ends[0], str) else ends:
        freeze(outputs[end[0]])
    inputs = {name: Channels(find(c.group), c.repeat) for name, c in inputs.items()}
    groups = list({id(find(c.group)): find(c.group) for c in outputs.values()}.values())
    for group in groups:
        group.prunable &= bool(group.producers) and group.width > 1
    return groups, inputs


def _batchnorm_after(model, name, consumers):
    """The BatchNormalization that normalises layer `name`'s channels, reached through
    pooling or dropout only; None if there is none."""
    while len(consumers.get(name, [])) == 1:
        layer = model.get_layer(consumers[name][0])
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            return layer
        if kind not in SCALE_FINDERS:
            return None
        name = layer.name
    return None


def channel_scores(model, group, consumers):
    """Importance of each channel of `group` (module docstring, step 2)."""
    import keras

    scores = np.zeros(group.width)
    for name in group.producers:
        layer = model.get_layer(name)
        kernel = np.abs(keras.ops.convert_to_numpy(layer.kernel))
        score = kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
        norm = _batchnorm_after(model, name, consumers)
        if norm is not None:
            gamma = keras.ops.convert_to_numpy(norm.gamma) if norm.scale else 1.0
            variance = keras.ops.convert_to_numpy(norm.moving_variance)
            score = score * np.abs(gamma) / np.sqrt(variance + norm.epsilon)
        scores += score
    return scores


def _consumers(model):
    found = {}
    for spec in model.get_config()["layers"]:
        for source in _sources(spec["inbound_nodes"]):
            found.setdefault(source, []).append(spec["name"])
    return found


def _sliced_weights(layer, channels_in, channels_out):
    """`layer`'s weights with only the kept input features and output channels."""
    import keras

    values = [keras.ops.convert_to_numpy(w) for w in layer.weights]
    kept_in = channels_in.kept_features() if channels_in is not None else None
    kept_out = channels_out.kept_features() if channels_out is not None else None
    kind = type(layer).__name__
    if kind in PRODUCERS:
        kernel, *bias = values
        if kept_in is not None:
            kernel = np.take(kernel, kept_in, axis=-2)
        if kept_out is not None:
            kernel = np.take(kernel, kept_out, axis=-1)
            bias = [np.take(b, kept_out) for b in bias]
        return [kernel, *bias]
    if kind == "BatchNormalization" and kept_in is not None:
        return [np.take(value, kept_in) for value in values]
    return values


def prune_model(model, keep):
    """A copy of `model` with `keep` of the channels of every prunable group, the most
    important ones, and their weights.

    Args:
        model: a Functional keras.Model (a preset's, or a run's model.keras).
        keep: fraction of each prunable group's channels kept, in (0, 1].

    Returns:
        (pruned model, rows): rows are (layer name, channels before, channels after) for the
        layers that lost channels.

    Raises:
        CatsDogsError: `keep` outside (0, 1], or nothing in the model can be pruned.

    Example:
        >>> pruned, rows = prune_model(get_preset("seed-cifar10").build(10), 0.5)  # doctest: +SKIP
        >>> rows[0]  # doctest: +SKIP
        ('conv2d', 32, 16)
    """
    check_keep(keep)
    groups, inputs = channel_groups(model)
    prunable = [group for group in groups if group.prunable]
    if not prunable:
        raise CatsDogsError(f"model {model.name!r} has no channels catsdogs can prune",
                            fix="prune a model of Conv2D/Dense layers (the seed, fast and resnet "
                                "presets), not a keras.applications backbone")
    consumers = _consumers(model)
    new_widths = {}
    for group in prunable:
        count = max(1, math.ceil(keep * group.width - 1e-9))
        order = np.argsort(-channel_scores(model, group, consumers), kind="stable")
        group.kept = np.sort(order[:count])
        new_widths.update({name: count for name in group.producers})
    pruned = _rebuilt(model, new_widths)
    outputs_of = {name: Channels(group) for group in groups for name in group.producers}
    for layer in model.layers:
        if layer.weights:
            pruned.get_layer(layer.name).set_weights(
                _sliced_weights(layer, inputs.get(layer.name), outputs_of.get(layer.name)))
    rows = [(spec["name"], _width(spec), new_widths[spec["name"]])
            for spec in model.get_config()["layers"]
            if spec["name"] in new_widths and new_widths[spec["name"]] < _width(spec)]
    return pruned, rows


def _rebuilt(model, new_widths):
    """A new model from `model`'s own config with the layers in `new_widths` (name -> width)
    at those widths; its weights are freshly initialised."""
    import keras

    config = model.get_config()
    for spec in config["layers"]:
        spec.pop("build_config", None)  # the old input shapes: each layer builds on its call
        if spec["name"] in new_widths:
            spec["config"]["filters" if spec["class_name"] == "Conv2D" else "units"] = \
                new_widths[spec["name"]]
    return keras.Model.from_config(config)


def scale_widths(model, factor):
    """A new, untrained model like `model` with the channels of every prunable group (step 1)
    times `factor`, rounded, at least one: the same graph and layer names, so a preset's adapt
    step, the run folder and every export take it as is (`train --width`, bench/scaling.py).

    Raises:
        CatsDogsError: nothing in the model has a width catsdogs can change.
    """
    groups, _ = channel_groups(model)
    new_widths = {name: max(1, round(factor * group.width))
                  for group in groups if group.prunable for name in group.producers}
    if not new_widths:
        raise CatsDogsError(f"model {model.name!r} has no widths catsdogs can scale",
                            where="--width", fix="scale a preset of Conv2D/Dense layers (the "
                                                 "seed, fast, resnet and air presets)")
    return _rebuilt(model, new_widths)


def pruned_model(config, class_names):
    """The starting model of a `catsdogs prune` run: run `config.prune_from`'s model (loaded
    safely, checked against the data's classes and the preset's size), pruned to
    `config.prune_keep`. The same run and keep give the same network, so a resumed run
    rebuilds it and restores its fine-tuned weights into it."""
    from catsdogs.models.presets import preset_of
    from catsdogs.training.distill import load_run_model

    check_keep(config.prune_keep, "--prune-keep")
    source = load_run_model(config.prune_from, class_names, "the run to prune")
    size = preset_of(config).image_size
    if tuple(source.image_size) != tuple(size):
        raise CatsDogsError(f"the run's model takes {source.image_size} images, preset "
                            f"{config.preset!r} {size}", where=config.prune_from,
                            fix="prune with the run's own preset and --image-size")
    model, rows = prune_model(source.model, config.prune_keep)
    log().info(f"Pruned {config.prune_from} to {config.prune_keep:g} of its channels: "
               + ", ".join(f"{name} {before}->{after}" for name, before, after in rows)
               + f"; parameters {source.model.count_params():,} -> {model.count_params():,}")
    return model
