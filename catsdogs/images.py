"""The one place images are read: the same rules at train, evaluate and predict time.

Pillow, not `tf.io.decode_image`, because TensorFlow's decoder stops a whole epoch on one bad
JPEG without naming it, ignores EXIF orientation and rejects CMYK; Pillow lets each file fail
alone with a reason. Decoding is done once per file, in threads (Pillow releases the GIL while
it decodes and resizes), and the pixels are kept in memory for every epoch after.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold, checked before decoding


class UnreadableImage(Exception):
    """A file that cannot be used as an image; str(error) is the reason shown to the user."""


def is_hidden(path):
    """Dot-files (`.DS_Store`, macOS `._x.jpg` forks) are never images the user meant."""
    return Path(path).name.startswith(".")


def has_image_extension(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path, size):
    """Read `path` as an RGB uint8 array of shape (height, width, 3), resized to `size`.

    Applies EXIF orientation; turns grayscale, palette (transparency composited on white),
    RGBA, CMYK and 16-bit images into 8-bit RGB; uses the first frame of animations.

    Args:
        path: an image file.
        size: (height, width) of the result.

    Raises:
        UnreadableImage: empty, truncated, not an image, or larger than MAX_PIXELS.
    """
    height, width = size
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UnreadableImage(f"too large: {image.width}x{image.height} pixels "
                                      f"(limit {MAX_PIXELS:,}, a possible decompression bomb)")
            # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still
            # covers the target size: several times faster on photos much larger than it.
            image.draft("RGB", (max(size), max(size)))
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
            image = _to_rgb(image)
            return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage("file not found") from None
    except UnidentifiedImageError:
        reason = "empty file" if os.path.getsize(path) == 0 else "not an image Pillow can read"
        raise UnreadableImage(reason) from None
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"too large: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise UnreadableImage(f"corrupt image: {error}") from None


def _to_rgb(image):
    if image.mode == "RGB":
        return image  # the common case; convert() would copy it
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if pixels.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(pixels * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def decode_many(paths, size, workers=None, progress=True):
    """Decode `paths` in parallel into one uint8 array; unreadable files are skipped.

    Returns:
        (pixels, kept, skipped): pixels has shape (len(kept), height, width, 3); kept holds
        the indices into `paths` that decoded; skipped holds (path, reason) pairs.
    """
    import keras  # deferred: importing Keras costs seconds that plain decoding does not need

    paths = list(paths)
    pixels = np.empty((len(paths), *size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    skipped = []
    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress and paths else None

    def decode_into(index):
        try:
            pixels[index] = decode_image(paths[index], size)
            ok[index] = True
        except UnreadableImage as error:
            return paths[index], str(error)
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for done, failure in enumerate(pool.map(decode_into, range(len(paths))), start=1):
            if failure:
                skipped.append(failure)
            if bar is not None and (done % 64 == 0 or done == len(paths)):
                bar.update(done)
    kept = np.flatnonzero(ok)
    return pixels[kept] if len(kept) < len(paths) else pixels, kept, skipped
