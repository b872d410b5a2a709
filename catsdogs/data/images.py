"""The one place images are read: the same rules at train, evaluate and predict time.

Pillow, not `tf.io.decode_image`, because TensorFlow's decoder stops a whole epoch on one bad
JPEG without naming it, ignores EXIF orientation and rejects CMYK; Pillow lets each file fail
alone with a reason. Decoding is done once per file, in parallel (decode_many says how), and the
pixels are kept in memory for every epoch after.
"""

import collections
import errno
import hashlib
import io
import multiprocessing
import os
import signal
import stat
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold, checked before decoding
# (bytes) one image's pixels as Pillow decodes them (after a JPEG's draft scaling), checked
# from the header before decoding: a 40-megapixel RGB PNG fits; a small file claiming a huge
# 16-bit image (a 194 kB PNG of 9400x9400 decodes to 169 MiB) does not. A decoded image is
# shrunk towards the target size before any conversion copies it, so this bounds the memory.
MAX_DECODED_BYTES = 128 * 2**20


class UnreadableImage(Exception):
    """A file that cannot be used as an image; str(error) is the reason shown to the user."""


class ImageTooLarge(UnreadableImage):
    """Over MAX_PIXELS or MAX_DECODED_BYTES, found from the header before decoding: the
    request was too large, not malformed (a server answers 413, not 400)."""


def is_hidden(path):
    """Dot-files (`.DS_Store`, macOS `._x.jpg` forks) are never images the user meant."""
    return Path(path).name.startswith(".")


def has_image_extension(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


_SPECIAL_KINDS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"),
                  (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


def _kind_reason(mode):
    """`not a regular file (fifo)` and the like for a stat mode; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "special file")
    return f"not a regular file ({kind})"


def irregular_reason(path):
    """Why `path` is not a regular file one can read without blocking, or None if it is.

    Opening a FIFO waits for a writer and reading a device may never end, so every place that
    lists user files asks this first (links to regular files are fine; it never opens `path`).
    """
    try:
        return _kind_reason(os.stat(path).st_mode)
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(path) else "file not found"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"cannot read the file: {error.strerror or error}"


# What decode_image does to every file, besides the size: disk caches of decoded pixels are
# keyed by it (data/cache.py), so change it with decode_image and old caches are not reused.
DECODE_SETTINGS = {"resize": "bilinear", "colour": "8-bit RGB, EXIF orientation applied, "
                   "transparency on white, first frame", "version": 1}


def decode_image(path, size, contents=None):
    """Read `path` as an RGB uint8 array of shape (height, width, 3), resized to `size`.

    Applies EXIF orientation; turns grayscale, palette (transparency composited on white),
    RGBA, CMYK and 16-bit images into 8-bit RGB; uses the first frame of animations.

    Args:
        path: an image file.
        size: (height, width) of the result.
        contents: the file's bytes, when the caller has read them already.

    Raises:
        ImageTooLarge: more than MAX_PIXELS pixels, or more than MAX_DECODED_BYTES once
            decoded (both read from the header, before decoding).
        UnreadableImage: empty, truncated or not an image.
    """
    height, width = size
    if contents is None:  # read through read_bytes: a FIFO or device never reaches Pillow
        contents = read_bytes(path)
    try:
        with Image.open(io.BytesIO(contents)) as image:  # lazy: the header only, so far
            if image.width * image.height > MAX_PIXELS:
                raise ImageTooLarge(f"too large: {image.width}x{image.height} pixels "
                                    f"(limit {MAX_PIXELS:,}, a possible decompression bomb)")
            # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still
            # covers the target size: several times faster on photos much larger than it.
            image.draft("RGB", (max(size), max(size)))
            check_decoded_size(image)
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
            image = _to_rgb(_shrink_towards(image, size))
            return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        empty = len(contents) == 0
        reason = "empty file" if empty else "not an image Pillow can read"
        raise UnreadableImage(reason) from None
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"too large: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise UnreadableImage(f"corrupt image: {error}") from None


def decoded_bytes(image):
    """Bytes Pillow will hold for `image` (opened, not yet loaded) once decoded: width x
    height x bands x bytes per sample of its mode (2 per sample for 16-bit images)."""
    try:
        mode = ImageMode.getmode(image.mode)
        per_pixel = len(mode.bands) * np.dtype(mode.typestr).itemsize
    except (KeyError, TypeError):  # a mode NumPy has no type for: Pillow's widest pixel
        per_pixel = 4
    return image.width * image.height * per_pixel


def check_decoded_size(image, limit=MAX_DECODED_BYTES):
    """ImageTooLarge when `image` would decode to more than `limit` bytes."""
    needed = decoded_bytes(image)
    if needed > limit:
        raise ImageTooLarge(f"too large: {image.width}x{image.height} {image.mode} pixels "
                            f"decode to {needed / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB "
                            f"per image); save it smaller, e.g. as an 8-bit JPEG")


def _shrink_towards(image, size):
    """`image` box-averaged by a whole factor while it stays at least twice `size` (Pillow's
    `reducing_gap` idea), before any mode conversion copies it at full size; the final
    bilinear resize then looks the same. Works for every mode, 16-bit included."""
    height, width = size
    factor = min(image.width // (2 * width), image.height // (2 * height))
    if factor < 2:
        return image
    return image.resize((image.width // factor, image.height // factor), Image.Resampling.BOX)


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


CHUNK = 64  # images per task: amortises the hand-off, still updates the progress bar often
PROCESSES_FROM = 1024  # images; below this, starting worker processes costs more than it saves


def decode_many(paths, size, workers=None, progress=True, processes_from=PROCESSES_FROM):
    """Decode `paths` in parallel into one uint8 array; unreadable files are skipped.

    Why processes for many files: Pillow releases the GIL only inside the JPEG decoder; for
    small images (a 32x32 CIFAR-10 JPEG decodes in ~50 us of ~140 us per file) the rest is
    Python holding the GIL, so two threads ran slower than one loop (CIFAR-10's 50,000
    training files: 11.6 s; forked workers: 4.1 s, bench/RESULTS.md, "Decoding folders").
    Processes scale with the cores. Fork, not spawn or forkserver: those import the caller's `__main__` again in every
    worker, which re-runs an unguarded script (`catsdogs.train(...)` at top level) and
    re-imports TensorFlow under `python -m`; the forked workers only run Pillow and NumPy.
    Linux only (fork is unsafe on macOS, absent on Windows); few files, or other platforms,
    use threads.

    Returns:
        Decoded(pixels, kept, skipped, digests): pixels has shape (len(kept), height, width, 3);
        kept holds the indices into `paths` that decoded; skipped holds (path, reason) pairs;
        digests the SHA-256 of each kept file (hashed while it is read anyway, for the
        training/validation leak check).
    """
    from catsdogs.console import progress_bar

    paths = list(paths)
    digests = [""] * len(paths)
    pixels = np.empty((len(paths), *size, 3), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)
    skipped = []
    bar = progress_bar(len(paths)) if progress else None
    starts = range(0, len(paths), CHUNK)
    pool = _pool(workers or os.cpu_count() or 1, processes=len(paths) >= processes_from)
    try:
        futures = collections.deque(pool.submit(decode_chunk, paths[start:start + CHUNK], size)
                                    for start in starts)
        for start in starts:
            # popped, so a chunk's pixels are freed once copied, not held until the end
            chunk_pixels, chunk_digests, failures = futures.popleft().result()
            pixels[start:start + len(chunk_pixels)] = chunk_pixels
            digests[start:start + len(chunk_digests)] = chunk_digests
            for index, reason in failures:
                ok[start + index] = False
                skipped.append((paths[start + index], reason))
            if bar is not None:
                bar.update(start + len(chunk_pixels))
    finally:  # on Ctrl-C or an error, drop the queued chunks instead of decoding them all
        pool.shutdown(wait=True, cancel_futures=True)
    kept = np.flatnonzero(ok)
    return Decoded(pixels[kept] if len(kept) < len(paths) else pixels, kept, skipped,
                   [digests[i] for i in kept])


class Decoded(NamedTuple):
    """What decode_many returns (see there)."""

    pixels: np.ndarray
    kept: np.ndarray
    skipped: list
    digests: list


def decode_chunk(paths, size):
    """One task of decode_many: (pixels and SHA-256 of every path, [(index, reason) of the
    unreadable ones]); an unreadable file's pixels are left zero, its digest empty."""
    pixels = np.zeros((len(paths), *size, 3), dtype=np.uint8)
    digests = [""] * len(paths)
    failures = []
    for index, path in enumerate(paths):
        try:
            contents = read_bytes(path)
            digests[index] = hashlib.sha256(contents).hexdigest()
            pixels[index] = decode_image(path, size, contents)
        except UnreadableImage as error:
            failures.append((index, str(error)))
    return pixels, digests, failures


def read_bytes(path):
    """A regular file's bytes, or UnreadableImage saying why not.

    Opened without blocking and checked on the open descriptor, so a FIFO or device that
    appears after the folder was listed still cannot hang the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise UnreadableImage(irregular_reason(path)
                              or f"cannot read the file: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as handle:
        reason = _kind_reason(os.fstat(fd).st_mode)
        if reason:
            raise UnreadableImage(reason)
        try:
            return handle.read()
        except OSError as error:
            raise UnreadableImage(f"cannot read the file: {error.strerror or error}") from None


def _pool(workers, processes):
    """Forked worker processes (see decode_many) where asked and possible, else threads."""
    if processes and workers > 1 and sys.platform.startswith("linux"):
        try:
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_ignore_interrupts)
        except (OSError, NotImplementedError):  # no POSIX semaphores (some sandboxes): threads
            pass
    return ThreadPoolExecutor(max_workers=workers)


def _ignore_interrupts():
    """Workers leave Ctrl-C to the parent, which cancels the pool: one message, no tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
