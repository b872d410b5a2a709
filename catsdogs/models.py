"""Model presets by name: `name -> builder(input_shape, num_classes) -> keras.Model`.

Every model takes pixels 0..255 (it starts with `Rescaling(1/255)`) and outputs probabilities:
one sigmoid unit for two classes, a softmax over classes otherwise. So predict, evaluate and
every export need only the model and its class names.
"""

import dataclasses
import difflib
from typing import Callable

import keras
from keras import layers

from catsdogs.config import AugmentConfig
from catsdogs.errors import CatsDogsError


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line for --list-presets
    image_size: tuple[int, int]  # (height, width) the model takes
    build_body: Callable  # (inputs tensor) -> features tensor, before the classifier head
    epochs: int  # default training length
    augment: AugmentConfig  # default augmentation
    listed_classes: int = 2  # class count --list-presets sizes the head for

    def build(self, num_classes):
        """The full model: Rescaling -> body -> probability head for `num_classes`."""
        inputs = keras.Input(shape=(*self.image_size, 3), name="pixels")
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
        x = self.build_body(x)
        outputs = probability_head(x, num_classes)
        return keras.Model(inputs, outputs, name=self.name)


def probability_head(x, num_classes):
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="probability")(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _conv_pool_stack(x, filters):
    for width in filters:
        x = layers.Conv2D(width, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    return x


def seed_catsdogs_body(x):
    """The cats/dogs tutorial CNN: Conv 32-64-128-128 (3x3, relu) + MaxPool 2, Dense 512."""
    x = _conv_pool_stack(x, (32, 64, 128, 128))
    x = layers.Flatten()(x)
    return layers.Dense(512, activation="relu")(x)


def seed_cifar10_body(x):
    """The CIFAR-10 tutorial CNN: Conv 32-64-128 (3x3, relu) + MaxPool 2, Dense 128."""
    x = _conv_pool_stack(x, (32, 64, 128))
    x = layers.Flatten()(x)
    return layers.Dense(128, activation="relu")(x)


SEED_CATSDOGS_AUGMENT = AugmentConfig(shear_range=0.2, zoom_range=(0.8, 1.2), horizontal_flip=True)

PRESETS = {
    preset.name: preset
    for preset in (
        Preset("seed-catsdogs", "the cats/dogs tutorial CNN, exactly (150x150)", (150, 150),
               seed_catsdogs_body, epochs=30, augment=SEED_CATSDOGS_AUGMENT),
        Preset("seed-cifar10", "the CIFAR-10 tutorial CNN, exactly (32x32)", (32, 32),
               seed_cifar10_body, epochs=10, augment=AugmentConfig(), listed_classes=10),
    )
}
DEFAULT_PRESET = {"folder": "seed-catsdogs", "cifar10": "seed-cifar10"}


def get_preset(name):
    """The preset called `name`, or a one-line error with the closest name."""
    if name in PRESETS:
        return PRESETS[name]
    match = difflib.get_close_matches(str(name), PRESETS, n=1)
    hint = f"did you mean {match[0]!r}?" if match else "see --list-presets"
    raise CatsDogsError(f"unknown preset {name!r}", where="--preset", fix=hint)


def count_flops(model):
    """Multiply-adds x 2 for one image through the Conv2D and Dense layers (the bulk of them)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, out_h, out_w, _ = layer.output.shape
            flops += 2 * kernel_h * kernel_w * channels_in * channels_out * out_h * out_w
        elif isinstance(layer, layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops


def describe_presets():
    """Lines for --list-presets: name, input size, parameters and FLOPs."""
    lines = [f"{'preset':<16}{'input':>9}{'params':>12}{'MFLOPs':>10}  description"]
    for preset in PRESETS.values():
        classes = preset.listed_classes
        model = preset.build(classes)
        size = "x".join(map(str, preset.image_size))
        lines.append(f"{preset.name:<16}{size:>9}{model.count_params():>12,}"
                     f"{count_flops(model) / 1e6:>10.1f}  {preset.description} ({classes} classes)")
    return lines
