"""Why the model said "dog": Grad-CAM heatmaps (Selvaraju et al. 2017), batched.

As in keras-io's `grad_cam` example: the gradient of the explained class's score (its logit,
before the sigmoid or softmax, as the paper and the example take it) with respect to the last
spatial feature map, averaged over space, weights that map's channels;
their weighted sum, through a ReLU, is where the evidence for the class lies. The map layer
is found for every preset: the last layer whose output is still an image (height x width x
channels) before pooling or flattening, looking inside a `keras.applications` backbone when
the network has one. A whole batch goes through one forward and one backward pass (each
image's score depends on its own features only, so the gradient of their sum gives each
image its own), so explaining a folder costs about what predicting it does, twice.
"""

import numpy as np

from catsdogs.errors import CatsDogsError

OVERLAY_ALPHA = 0.45  # how much of the heatmap shows over the photo
COLORMAP = "jet"  # keras-io's choice: hot = evidence for the class


def _spatial(layer):
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    return shape is not None and len(shape) == 4


def find_feature_layer(model):
    """(backbone or None, layer): the last layer with a 4-D output that feeds the head.

    A nested model (a keras.applications backbone) that pools inside itself hides its maps
    from the outer graph; then its own last 4-D layer is taken.
    """
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model) and not _spatial(layer):
            inner = next((l for l in reversed(layer.layers) if _spatial(l)), None)
            if inner is not None:
                return layer, inner
        if _spatial(layer) and not isinstance(layer, keras.layers.InputLayer):
            return None, layer
    raise CatsDogsError("the model has no spatial feature map to explain",
                        fix="Grad-CAM needs a convolutional network")


def _logits_of(head):
    """A function head input -> the head's logits, for a head ending in sigmoid or softmax (a
    Dense with that activation, or that Activation after the logits: a calibrated model's);
    None for any other head, whose probabilities are then explained."""
    import keras
    from keras import ops

    activation = getattr(head, "activation", None)
    if activation not in (keras.activations.sigmoid, keras.activations.softmax):
        return None
    if isinstance(head, keras.layers.Activation):
        return lambda x: x
    if isinstance(head, keras.layers.Dense):
        return lambda x: ops.matmul(x, head.kernel) + (head.bias if head.use_bias else 0)
    return None


def _maps_and_scores(model):
    """(function pixels -> (feature maps, scores), whether the scores are logits), through
    the model's own layers: the head's logits where it has them (Grad-CAM's class score is
    the one before the softmax; a saturated probability has a gradient of 0, and a confident
    photo's heatmap would come out blank), else its probabilities."""
    import keras

    head = model.layers[-1]
    logits = _logits_of(head)
    backbone, layer = find_feature_layer(model)
    if backbone is None:
        graph = keras.Model(model.input, [layer.output, head.input if logits else model.output])
        if logits is None:
            return graph, False

        def through_the_logits(pixels):
            maps, x = graph(pixels)
            return maps, logits(x)

        return through_the_logits, True
    sequential = isinstance(backbone, keras.Sequential)  # a tutorial's model inside a wrapper
    inner = None if sequential else keras.Model(backbone.inputs, [layer.output, backbone.output])

    # the layers around a nested backbone, as a chain (a Sequential's list holds no InputLayer,
    # a functional model's does); Keras ops between them are not layers and are skipped: a
    # calibrated model's division by T among them, which scales the logits but not the
    # normalised heatmap
    chain = [outer for outer in model.layers if not isinstance(outer, keras.layers.InputLayer)]

    def run(pixels):
        x, maps = pixels, None
        for outer in chain:
            if outer is head and logits:
                x = logits(x)
            elif outer is not backbone:
                x = outer(x)
            elif sequential:
                for step in backbone.layers:
                    x = step(x)
                    maps = x if step is layer else maps
            else:
                maps, x = inner(x)
        return maps, x

    return run, logits is not None


def gradcam(model, pixels, class_indices=None, batch_size=32):
    """Heatmaps in [0, 1] at the feature map's resolution, one per image.

    Args:
        model: a Keras model taking pixels 0..255 and giving probabilities.
        pixels: float array (n, height, width, 3).
        class_indices: the class each heatmap explains; default: the predicted class.

    Returns:
        (heatmaps (n, h', w'), explained class index per image)
    """
    import tensorflow as tf

    members = ensemble_members(model)
    if members:
        return _ensemble_gradcam(model, members, pixels, class_indices, batch_size)
    run, are_logits = _maps_and_scores(model)
    heatmaps, explained = [], []
    for start in range(0, len(pixels), batch_size):
        batch = tf.constant(np.asarray(pixels[start:start + batch_size], np.float32))
        with tf.GradientTape() as tape:
            maps, scores = run(batch)
            if scores.shape[-1] == 1:  # one sigmoid unit: class 1 is z (p), class 0 -z (1-p)
                scores = tf.concat([-scores if are_logits else 1 - scores, scores], axis=-1)
            chosen = (tf.argmax(scores, axis=-1, output_type=tf.int32)
                      if class_indices is None else
                      tf.constant(np.asarray(class_indices[start:start + len(batch)]), tf.int32))
            score = tf.reduce_sum(tf.gather(scores, chosen, batch_dims=1))
        gradients = tape.gradient(score, maps)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        heatmap = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1)).numpy()
        peak = heatmap.reshape(len(heatmap), -1).max(axis=1)
        heatmaps.append(heatmap / np.where(peak > 0, peak, 1)[:, None, None])
        explained.append(chosen.numpy())
    return np.concatenate(heatmaps), np.concatenate(explained)


def ensemble_members(model):
    """The member models of an ensemble (inference/ensemble.py: nested models whose outputs
    meet in one Average layer), else []."""
    import keras

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Average):
        return []
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return members if len(members) == len(last.input) else []


def _ensemble_gradcam(model, members, pixels, class_indices, batch_size):
    """An ensemble's heatmap: the mean of its members' heatmaps for the class the ensemble
    chose, each at the first member's map resolution."""
    import tensorflow as tf

    from catsdogs.inference.runtimes import keras_probabilities

    if class_indices is None:
        class_indices = keras_probabilities(model, pixels).argmax(axis=1)
    maps = [gradcam(member, pixels, class_indices, batch_size)[0] for member in members]
    size = maps[0].shape[1:3]
    resized = [m if m.shape[1:3] == size else
               tf.image.resize(m[..., None], size).numpy()[..., 0] for m in maps]
    return np.mean(resized, axis=0), np.asarray(class_indices)


def overlay(image, heatmap, alpha=OVERLAY_ALPHA, min_side=224):
    """The photo (uint8 h x w x 3) with the heatmap, resized to it, blended on top; photos
    smaller than `min_side` (a 32x32 CIFAR-10 image) are enlarged first, so it can be seen."""
    from matplotlib import colormaps
    from PIL import Image

    image = np.uint8(np.clip(image, 0, 255))
    if min(image.shape[:2]) < min_side:
        factor = min_side / min(image.shape[:2])
        image = np.asarray(Image.fromarray(image).resize(
            (round(image.shape[1] * factor), round(image.shape[0] * factor)),
            Image.Resampling.BICUBIC))
    height, width = image.shape[:2]
    scaled = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(
        (width, height), Image.Resampling.BILINEAR)
    colour = colormaps[COLORMAP](np.asarray(scaled) / 255.0)[..., :3] * 255
    return np.uint8(np.clip((1 - alpha) * image + alpha * colour, 0, 255))


def write_overlays(images, heatmaps, names, folder):
    """Save each overlay as `folder/<name>.jpg`; names already taken get -1, -2, ..., so no
    existing file is written over, and none outside `folder` (runs.write_new)."""
    from pathlib import Path

    from PIL import Image

    from catsdogs import runs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image, heatmap, name in zip(images, heatmaps, names):
        picture = Image.fromarray(overlay(image, heatmap))
        written.append(runs.write_new(folder, name, ".jpg",
                                      lambda temp: picture.save(temp, "JPEG", quality=90)))
    return written
