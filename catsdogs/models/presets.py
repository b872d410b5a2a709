"""Model presets by name: an architecture plus the recipe it trains best with.

Every model takes pixels 0..255 (it starts with `Rescaling(1/255)`) and outputs probabilities:
one sigmoid unit for two classes, a softmax over classes otherwise. So predict, evaluate and
every export need only the model and its class names.

Keras is imported inside the functions that build layers, never at the top: the registry
(names, sizes, recipes) is read while flags are checked, before TensorFlow loads (seconds), so
a mistyped preset name is one line at once.
"""

import dataclasses
import difflib
import functools
import math
import re
from typing import Callable

import numpy as np

from catsdogs.config import AugmentConfig
from catsdogs.errors import CatsDogsError, RunFailed
from catsdogs.models.imagenet import ImagenetWeights


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a preset trains by default; the TrainConfig field of the same name overrides each."""

    epochs: int
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    lookahead: bool = False
    progressive_start: float = 1.0  # 1: every epoch at full size (progressive.py)
    precise_bn: bool = False  # BatchNorm statistics recomputed at the end (precise_bn.py)
    steps_per_execution: int = 1  # >1 for small models, whose steps are short
    augment: AugmentConfig = AugmentConfig()


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line for --list-presets
    image_size: tuple[int, int]  # (height, width) the model takes
    build_body: Callable  # (rescaled inputs) -> features, before the classifier head
    recipe: Recipe
    listed_classes: int = 2  # class count --list-presets sizes the head for
    # a keras.applications backbone's ImageNet weights; build_body then takes `weights`
    imagenet: ImagenetWeights | None = None
    any_size: bool = False  # the body pools globally, so it trains on smaller images too
    adapt: Callable | None = None  # (model, training pixels) -> None: set layers from the data

    @property
    def pretrainable(self):
        """`--weights imagenet` starts it (a keras.applications backbone)."""
        return self.imagenet is not None

    def check_weights(self, weights):
        """Only keras.applications presets have ImageNet weights; a weights file or a run
        folder starts any preset (transfer.py)."""
        from catsdogs.models.transfer import check_source

        if weights == "imagenet" and not self.pretrainable:
            raise CatsDogsError(f"preset {self.name!r} has no pretrained weights", where="--weights",
                                fix=f"use one of {_presets_with('pretrainable')}, a weights file, "
                                    "a run folder, or --weights none")
        check_source(weights)

    def at_size(self, side):
        """The preset taking side x side images (`--image-size`); None: the size it is published
        at. Every body here is built on its input's shape, so only the size changes."""
        if side is None or (side, side) == tuple(self.image_size):
            return self
        return dataclasses.replace(self, image_size=(side, side))

    def check_size(self, first_side=None):
        """A preset moved to another size (`at_size`) is built once at it, and at `first_side`
        (progressive resizing's first epoch), before a file is decoded or a run folder written,
        so a side its layers cannot take is one line up front, in Keras' words."""
        for side in dict.fromkeys((self.image_size[0], first_side or self.image_size[0])):
            try:
                self.at_size(side).build(2)
            except ValueError as error:  # a side convolutions and poolings shrink below a pixel
                reason = _keras_reason(error)
                raise CatsDogsError(
                    f"preset {self.name!r} cannot take {side}x{side} images"
                    + ("" if side == self.image_size[0] else " (progressive resizing's first "
                       "epoch)") + f": {reason}",
                    where="--image-size", fix="give a larger --image-size") from None

    def check_progressive(self, start):
        """Progressive resizing needs a body that takes any image size (no Flatten)."""
        if start < 1 and not self.any_size:
            raise CatsDogsError(f"preset {self.name!r} only takes {self.image_size[0]}x"
                                f"{self.image_size[1]} images", where="--progressive-start",
                                fix=f"use one of {_presets_with('any_size')}, or --progressive-start 1")

    def build(self, num_classes, weights="none"):
        """The full model: Rescaling -> body -> probability head for `num_classes`.

        `weights="imagenet"` starts a keras.applications backbone from ImageNet weights
        (a weights file or a run folder: transfer.start_model).
        """
        import keras
        from keras import layers

        self.check_weights(weights)
        inputs = keras.Input(shape=(*self.image_size, 3), name="pixels")
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
        try:
            features = self.build_body(x, weights) if self.pretrainable else self.build_body(x)
        except Exception as error:  # offline, a proxy, a damaged cache file: the same fix
            if weights != "imagenet":
                raise
            raise self._imagenet_unavailable(type(error).__name__) from None
        return keras.Model(inputs, probability_head(features, num_classes), name=self.name)

    def get_imagenet_weights(self):
        """Have the ImageNet weights in Keras' cache (a cached file is only hash-checked), so
        that a machine without them is told before a run folder is written."""
        try:
            self.imagenet.fetch()
        except CatsDogsError:
            raise self._imagenet_unavailable("no network") from None

    def _imagenet_unavailable(self, reason):
        """RunFailed (exit 1): the settings were fine, the network or the cache was not."""
        return RunFailed(
            f"could not get the imagenet weights of {self.name} ({reason})", where="--weights",
            fix=f"run `catsdogs weights fetch {self.name}` where the network is (it saves "
                f"{self.imagenet.where_keras_looks()}, where Keras looks: copy it to the "
                "same place here), or pass --weights none")


def _keras_reason(error):
    """The line of a Keras error that says what is wrong: Keras wraps a layer's message in
    "Exception encountered when calling ..." and terminal bold."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    return lines[0] if lines else type(error).__name__


def _presets_with(capability):
    """Names of the presets whose `capability` flag is set, for an error's fix."""
    return ", ".join(name for name, preset in PRESETS.items() if getattr(preset, capability))


def probability_head(x, num_classes):
    from keras import layers
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="probability")(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


# ---------------------------------------------------------------- the seed tutorials, exactly


def _conv_pool_stack(x, filters):
    from keras import layers
    for width in filters:
        x = layers.Conv2D(width, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    return x


def seed_catsdogs_body(x):
    """The cats/dogs tutorial CNN: Conv 32-64-128-128 (3x3, relu) + MaxPool 2, Dense 512."""
    from keras import layers

    x = _conv_pool_stack(x, (32, 64, 128, 128))
    x = layers.Flatten()(x)
    return layers.Dense(512, activation="relu")(x)


def seed_cifar10_body(x):
    """The CIFAR-10 tutorial CNN: Conv 32-64-128 (3x3, relu) + MaxPool 2, Dense 128."""
    from keras import layers

    x = _conv_pool_stack(x, (32, 64, 128))
    x = layers.Flatten()(x)
    return layers.Dense(128, activation="relu")(x)


# ---------------------------------------------------------------- better presets


def make_backbone_body(application, minus_one_to_one=False):
    """A keras.applications network without its top, globally pooled, as a preset body.

    Its input is our 0..1 pixels scaled to what the network was trained on, inside the model,
    so exports need no separate preprocessing step: back to 0..255 for the networks that
    normalise inside themselves (MobileNetV3, EfficientNet(V2), ConvNeXt), to -1..1
    (`minus_one_to_one`) for ResNetV2, whose preprocess_input does that outside. With ImageNet
    weights the backbone is frozen (BatchNorm in inference mode) and only the new head trains,
    the first stage of Keras' transfer-learning guide (training/stages.py adds the second);
    from scratch (`weights="none"`) every layer trains.
    """

    def body(x, weights="none"):
        import keras
        from keras import layers
        constructor = getattr(keras.applications, application)
        backbone = constructor(include_top=False, weights=None if weights == "none" else weights,
                               input_shape=tuple(x.shape[1:]), pooling="avg")
        backbone.trainable = weights == "none"
        if minus_one_to_one:
            return backbone(layers.Rescaling(2.0, offset=-1.0, name="to_minus_1_1")(x))
        return backbone(layers.Rescaling(255.0, name="to_0_255")(x))

    return body


def bn_relu(x):
    """BatchNorm -> ReLU."""
    from keras import layers

    return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))


def shift_norm(x, activation=None):
    """airbench's BatchNorm -> activation: a shift but no scale (the next conv scales),
    statistics that follow the weights fast (momentum 0.6, as its lookahead needs);
    --optimizer sgd steps the shifts 64x further; `activation` None means ReLU. airbench has
    GELU here, air-cifar10 ReLU: on this CPU GELU costs 18 % of an epoch, the same minutes
    then hold more epochs
    (bench/history/cifar10-airbench-variants.md, "airbench's whole recipe")."""
    from keras import layers

    x = layers.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False)(x)
    return (activation or layers.ReLU)()(x)


def conv_bn(x, width, stride=1):
    """3x3 conv -> BatchNorm -> ReLU; no conv bias, BatchNorm's shift replaces it."""
    from keras import layers

    x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
    return bn_relu(x)


def residual_stage(x, width, pool=True):
    """airbench-style stage: conv -> max-pool -> BN-ReLU, then a residual conv pair.

    Pooling right after the first conv does the stage's expensive work at the lower
    resolution; the residual pair adds depth at a quarter of the cost.
    """
    from keras import layers

    x = conv_bn(x, width)
    if pool:
        x = layers.MaxPooling2D(2)(x)
    shortcut = x
    x = conv_bn(x, width)
    x = conv_bn(x, width)
    return layers.Add()([x, shortcut])


def make_staged_body(widths, stem, stage=residual_stage, dropout=0.0):
    """A small CNN: `stem` (a function of the input), one `stage` (residual_stage or
    conv_group) per width, global pooling."""

    def body(x):
        from keras import layers
        x = stem(x)
        for width in widths:
            x = stage(x, width)
        x = layers.GlobalMaxPooling2D()(x)
        return layers.Dropout(dropout)(x) if dropout else x

    return body


def conv_stem(width, stride=1):
    """A Conv-BN-ReLU stem for make_staged_body."""
    return functools.partial(conv_bn, width=width, stride=stride)


def conv_group(x, width, norm=bn_relu):
    """airbench's block: conv -> max-pool -> norm -> conv -> norm, no shortcut. With the
    whitening stem at stride 1 in front, airbench's network shape (air-cifar10): wide late
    groups work at 7x7 and 3x3, where width is cheap.

    Pooling before the BatchNorm normalises a quarter of the positions, and the second conv
    runs at the lower resolution: most of the block's width costs a quarter of its FLOPs.
    """
    from keras import layers

    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = norm(layers.MaxPooling2D(2)(x))
    return norm(layers.Conv2D(width, 3, padding="same", use_bias=False)(x))


WHITENING_LAYER = "patch_whitening"


def whitening_stem(x, patch=2, stride=None, activation=None):
    """airbench's first layer: a frozen `patch`x`patch` convolution (stride `patch` unless
    given) whose filters whiten image patches (set from the training images by `whiten_patches`),
    then `activation` (None: ReLU).

    Each filter is an eigenvector of the patch covariance scaled to unit variance, and its
    negative (so the ReLU after it keeps both signs): the next layers start from decorrelated
    inputs, which made the first CIFAR-10 epoch 9 points better here
    (bench/history/cifar10-time-to-accuracy.md, "fast-cifar10 with a patch-whitening stem").
    A plain Conv2D, not a custom layer: `.keras` safe loading and every export take it as is.
    """
    from keras import layers

    x = layers.Conv2D(2 * patch * patch * 3, patch, strides=stride or patch,
                      name=WHITENING_LAYER, trainable=False)(x)
    return (activation or layers.ReLU)()(x)


def whiten_patches(model, pixels, sample=5000, epsilon=5e-4):
    """Set the whitening layer from training images (uint8 0..255, scaled 0..1 as the model's
    Rescaling does): filters V / sqrt(eigenvalue + epsilon) and their negatives; the bias
    centres the patches, so each filter's output has mean 0 and variance ~1 on the data."""
    layer = model.get_layer(WHITENING_LAYER)
    patch, _, channels, _ = layer.kernel.shape
    images = pixels[::max(1, len(pixels) // sample)].astype(np.float64) / 255.0  # every class
    count, height, width = images.shape[0], images.shape[1] // patch, images.shape[2] // patch
    patches = images[:, :height * patch, :width * patch].reshape(
        count, height, patch, width, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(-1, patch * patch * channels)  # (row, column, channel): Conv2D's order
    mean = patches.mean(axis=0)
    centred = patches - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    filters = eigenvectors / np.sqrt(eigenvalues + epsilon)
    filters = np.concatenate([filters, -filters], axis=1)
    layer.set_weights([filters.reshape(layer.kernel.shape).astype(np.float32),
                       (-mean @ filters).astype(np.float32)])


def make_whitened_body(widths):
    """The patch-whitening stem, then Conv-BN-ReLU + MaxPool per width, global max pooling.
    The stem's stride 2 halves the image before any learned convolution: a quarter of the
    FLOPs of the same widths at full resolution."""

    def body(x):
        from keras import layers
        x = whitening_stem(x)
        for width in widths:
            x = conv_bn(x, width)
            x = layers.MaxPooling2D(2)(x)
        return layers.GlobalMaxPooling2D()(x)

    return body


def make_air_body(widths, norm=bn_relu, stem_activation=None, logit_scale=1.0):
    """airbench's network shape (air-cifar10, and bench/variants.py's other widths and norms):
    the whitening stem at stride 1, a conv_group per width, global max pooling; features
    (so the logits) scaled by `logit_scale` (airbench's 1/9: small first logits)."""
    features = make_staged_body(widths, stage=functools.partial(conv_group, norm=norm),
                                stem=functools.partial(whitening_stem, stride=1,
                                                       activation=stem_activation))
    if logit_scale == 1.0:
        return features

    def body(x):
        from keras import layers
        return layers.Rescaling(logit_scale, name="logit_scale")(features(x))

    return body


def identity_init(model):
    """airbench's dirac initialisation: each 3x3 convolution but the whitening stem starts by
    passing its first min(in, out) channels through, an implicit shortcut in a network
    without shortcuts."""
    import keras
    from keras import layers

    for layer in model.layers:
        if isinstance(layer, layers.Conv2D) and layer.name != WHITENING_LAYER:
            kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
            height, width, channels_in, channels_out = kernel.shape
            kept = np.arange(min(channels_in, channels_out))
            kernel[..., kept] = 0
            kernel[height // 2, width // 2, kept, kept] = 1
            layer.kernel.assign(kernel)


def whiten_and_identity_init(model, pixels):
    """air-cifar10's start: the whitening stem set from the training images, identity
    initialisation for the convolutions after it."""
    whiten_patches(model, pixels)
    identity_init(model)


SEED_CATSDOGS_AUGMENT = AugmentConfig(shear_range=0.2, zoom_range=(0.8, 1.2), horizontal_flip=True)
PHOTO_AUGMENT = AugmentConfig(rotation_range=15, width_shift_range=0.1, height_shift_range=0.1,
                              zoom_range=(0.85, 1.15), horizontal_flip=True,
                              brightness_range=(0.8, 1.2))
CIFAR_AUGMENT = AugmentConfig(width_shift_range=0.125, height_shift_range=0.125,
                              horizontal_flip=True)
# Whole-pixel shifts of up to 2 px (ImageDataGenerator's int range 3) and flips: airbench's
# augmentation. No resampling blur, so training images look like the test images: 2 points
# better than CIFAR_AUGMENT's blurred shifts of up to 4 px after 5 epochs
# (bench/history/cifar10-time-to-accuracy.md, "whole-pixel shifts").
CIFAR_PIXEL_SHIFT_AUGMENT = AugmentConfig(width_shift_range=3, height_shift_range=3,
                                          horizontal_flip=True)

BACKBONE_RECIPE = Recipe(epochs=10, batch_size=32, learning_rate=1e-3, schedule="cosine",
                         augment=PHOTO_AUGMENT)
# keras.applications backbones beside MobileNetV3Small: (preset, application, their ImageNet
# weights: the file Keras downloads into ~/.keras/models, the module and key of its URL and hash)
BACKBONES = (
    ("efficientnetb0-catsdogs", "EfficientNetB0",
     ImagenetWeights("efficientnetb0_notop.h5", "efficientnet", "b0")),
    ("efficientnetv2b0-catsdogs", "EfficientNetV2B0",
     ImagenetWeights("efficientnetv2-b0_notop.h5", "efficientnet_v2", "b0")),
    ("resnet50v2-catsdogs", "ResNet50V2",
     ImagenetWeights("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet",
                     "resnet50v2")),
    ("convnexttiny-catsdogs", "ConvNeXtTiny",
     ImagenetWeights("convnext_tiny_notop.h5", "convnext", "convnext_tiny")),
    ("mobilenetv3large-catsdogs", "MobileNetV3Large",
     ImagenetWeights("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
                     "large_224_1.0_float")),
)

FAST_CATSDOGS = Preset(
    "fast-catsdogs", "resnet-catsdogs' stages behind a patch-whitening stem, at 96x96 for 11 "
    "epochs: aims at the seed's accuracy in a quarter of its time", (96, 96),
    make_staged_body((64, 128, 256), stem=whitening_stem, dropout=0.2),
    Recipe(epochs=11, batch_size=32, learning_rate=2e-3, schedule="cosine", label_smoothing=0.1,
           weight_decay=5e-4, precise_bn=True, augment=PHOTO_AUGMENT),
    any_size=True, adapt=whiten_patches)

# fast-catsdogs for resnet-catsdogs' 50-epoch training FLOPs (0.125 against 0.127 PFLOP):
# ahead of it on the held-out photos that choose, and on the test photos
# (bench/RESULTS.md, "fast-catsdogs at resnet-catsdogs' FLOPs")
LONG_CATSDOGS = dataclasses.replace(
    FAST_CATSDOGS, name="long-catsdogs", description="fast-catsdogs for 50 epochs: "
    "resnet-catsdogs' training FLOPs", recipe=dataclasses.replace(FAST_CATSDOGS.recipe, epochs=50))

PRESETS = {
    preset.name: preset
    for preset in (
        Preset("seed-catsdogs", "the cats/dogs tutorial CNN, exactly (150x150)", (150, 150),
               seed_catsdogs_body, Recipe(epochs=30, augment=SEED_CATSDOGS_AUGMENT)),
        Preset("seed-cifar10", "the CIFAR-10 tutorial CNN, exactly (32x32)", (32, 32),
               seed_cifar10_body, Recipe(epochs=10), listed_classes=10),
        FAST_CATSDOGS,
        LONG_CATSDOGS,
        # long-catsdogs at 128 px, grown from 96 px over the first 3/4 of the epochs: chosen on
        # the held-out photos over 96, 112 and 128 px throughout (bench/RESULTS.md, "Image size
        # on long-catsdogs")
        dataclasses.replace(
            LONG_CATSDOGS, name="hires-catsdogs", image_size=(128, 128),
            description="long-catsdogs at 128x128, grown from 96x96 over the first 3/4 of its 50 "
                        "epochs: 1.5x its FLOPs, the most cats/dogs accuracy from scratch here",
            recipe=dataclasses.replace(LONG_CATSDOGS.recipe, progressive_start=0.75)),
        Preset("resnet-catsdogs", "small residual CNN at 112x112 from scratch, strong "
               "augmentation, AdamW + cosine, progressive resizing from 64x64, about 20 min "
               "on 2 cores", (112, 112),
               make_staged_body((64, 128, 256), stem=conv_stem(32, stride=2), dropout=0.2),
               Recipe(epochs=50, batch_size=32, learning_rate=2e-3, schedule="cosine",
                      label_smoothing=0.1, weight_decay=5e-4, progressive_start=0.57,
                      precise_bn=True, augment=PHOTO_AUGMENT), any_size=True),
        Preset("fast-cifar10", "patch-whitening stem (airbench) + BatchNorm CNN 32-64-128 at "
               "half resolution, batches of 64, 3 epochs, cosine schedule", (32, 32),
               make_whitened_body((32, 64, 128)),
               Recipe(epochs=3, batch_size=64, learning_rate=5e-3, schedule="cosine",
                      steps_per_execution=32, augment=AugmentConfig(horizontal_flip=True)),
               listed_classes=10, any_size=True, adapt=whiten_patches),
        Preset("resnet-cifar10", "airbench-style residual CNN (whitening stem, 32-64-128), flips "
               "+ shifts, label smoothing, AdamW + cosine, 17 epochs: about 18 min on 2 cores",
               (32, 32),
               make_staged_body((32, 64, 128), stem=functools.partial(whitening_stem, stride=1)),
               Recipe(epochs=17, batch_size=128, learning_rate=4e-3, schedule="cosine",
                      label_smoothing=0.2, weight_decay=5e-4, augment=CIFAR_AUGMENT),
               listed_classes=10, any_size=True, adapt=whiten_patches),
        Preset("air-cifar10", "airbench's network and airbench94_muon's recipe at 48-192-192: "
               "whitening stem, conv groups (no shortcuts), shift-only BatchNorm, ReLU; Muon for "
               "the convolutions and Nesterov SGD for the rest in batches of 2000, linear decay, "
               "flips + whole-pixel shifts, 12 epochs: aims at the most CIFAR-10 accuracy in "
               "20 min on 2 cores", (32, 32),
               make_air_body((48, 192, 192), norm=shift_norm, logit_scale=1 / 9),
               # airbench94_muon's rates and weight decay (0.053 per example of a summed loss over
               # 2000, through momentum 0.85) for Keras' mean loss and decoupled decay; the filter
               # rate is optim.MUON_RATE_RATIO of it (bench/history/cifar10-airbench-variants.md,
               # "airbench94_muon's Muon")
               Recipe(epochs=12, batch_size=2000, optimizer="muon", learning_rate=1.65,
                      schedule="linear", label_smoothing=0.2, weight_decay=0.0162,
                      augment=CIFAR_PIXEL_SHIFT_AUGMENT),
               listed_classes=10, any_size=True, adapt=whiten_and_identity_init),
        Preset("mobilenetv3-catsdogs", "keras.applications MobileNetV3Small at 224x224; "
               "--weights imagenet trains only a new head on a frozen pretrained backbone",
               (224, 224), make_backbone_body("MobileNetV3Small"), BACKBONE_RECIPE,
               imagenet=ImagenetWeights("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                        "mobilenet_v3", "small_224_1.0_float")),
        *(Preset(name, f"keras.applications {application} at 224x224; --weights imagenet as "
                       f"for mobilenetv3-catsdogs", (224, 224),
                 make_backbone_body(application, minus_one_to_one=application == "ResNet50V2"),
                 BACKBONE_RECIPE, imagenet=imagenet)
          for name, application, imagenet in BACKBONES),
    )
}
DEFAULT_PRESET = {"folder": "seed-catsdogs", "cifar10": "seed-cifar10"}


def imagenet_weights(name):
    """The ImageNet weights of preset `name`, or a one-line error naming those that have them."""
    if name in PRESETS and PRESETS[name].pretrainable:
        return PRESETS[name].imagenet
    names = [preset for preset in PRESETS if PRESETS[preset].pretrainable]
    match = difflib.get_close_matches(str(name), names, n=1)
    raise CatsDogsError(f"no ImageNet weights for {name!r}", where="catsdogs weights fetch",
                        fix=(f"did you mean {match[0]!r}? " if match else "") +
                        f"one of {', '.join(names)}")


def get_preset(name):
    """The preset called `name`, or a one-line error with the closest name."""
    if name in PRESETS:
        return PRESETS[name]
    match = difflib.get_close_matches(str(name), PRESETS, n=1)
    hint = f"did you mean {match[0]!r}?" if match else "see --list-presets"
    raise CatsDogsError(f"unknown preset {name!r}", where="--preset", fix=hint)


def preset_of(config):
    """The preset a training config builds: `--preset` at `--image-size`."""
    return get_preset(config.preset).at_size(config.image_size)


def count_flops(model):
    """Multiply-adds x 2 for one image through the convolutions and Dense layers (the bulk of
    them), counting inside nested models such as keras.applications backbones."""
    import keras
    from keras import layers

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            flops += count_flops(layer)
        elif isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, out_h, out_w, _ = layer.output.shape
            flops += 2 * kernel_h * kernel_w * channels_in * channels_out * out_h * out_w
        elif isinstance(layer, layers.Dense):  # once per position when applied to a feature map
            positions = math.prod(layer.output.shape[1:-1])  # (ConvNeXt's pointwise layers)
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1] * positions
    return flops


def describe_presets():
    """Lines for --list-presets: name, input size, parameters and FLOPs; yielded one by one,
    as each preset is built and its FLOPs counted (a second or more each), so the table
    grows on the screen instead of appearing after a silent quarter of a minute."""
    width = max(map(len, PRESETS)) + 1
    yield f"{'preset':<{width}}{'input':>9}{'params':>12}{'MFLOPs':>10}  description"
    for preset in PRESETS.values():
        model = preset.build(preset.listed_classes)
        size = "x".join(map(str, preset.image_size))
        yield (f"{preset.name:<{width}}{size:>9}{model.count_params():>12,}"
               f"{count_flops(model) / 1e6:>10.1f}  {preset.description} "
               f"({preset.listed_classes} classes)")
