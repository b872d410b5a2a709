"""Pixels decoded when they are read (`--cache none`): for folders too big even for a disk
cache. Nothing decoded is kept: each epoch decodes its batches again, in the pipeline.

A `DecodeOnRead` is read as a disk cache's pixels file is (cache.DiskArray: `shape`, `dtype`,
`read(rows)`), so a Split backed by it is carved into splits by row numbers, and the training
pipeline (a full permutation every epoch, flips, augmentation, mixing, progressive resizing)
is the disk cache's, unchanged; only where a batch's pixels come from differs.

Every file is still read once when the data is loaded (`open_files`): hashed (the leak check
needs each file's SHA-256) and decoded as small as its format allows, so an unreadable file is
left out with its reason before training, as with the caches, not found in the middle of an
epoch. One that stops decoding during the run (rewritten, deleted) stops it with one line naming
it: the store keeps that error (`failure`), which tf_pipeline.read_errors_raised raises in place of
the TensorFlow error that carried its text out of the pipeline.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from catsdogs.console import log
from catsdogs.data.images import UnreadableImage, decode_image, decode_many
from catsdogs.errors import RunFailed

# Decoded this small to check a file: a JPEG is decoded at 1/8 scale (libjpeg's draft mode,
# which still reads every byte of the file, so a truncated one fails as at full size); other
# formats are decoded whole. The pixels are dropped; 3 bytes a file stay in memory meanwhile.
CHECK_SIZE = (1, 1)


class DecodeOnRead:
    """Image files read as rows of uint8 pixels at `size`: `read(rows)` decodes those files,
    in parallel threads (Pillow lets go of the GIL while it decodes and resizes), into a new
    array of shape (len(rows), height, width, 3). `failure`: the first RunFailed it raised."""

    dtype = np.dtype(np.uint8)

    def __init__(self, paths, size, threads=None):
        self.failure = None
        self.paths = list(paths)
        self.size = tuple(size)
        self.shape = (len(self.paths), *self.size, 3)
        self.pool = ThreadPoolExecutor(threads or os.cpu_count() or 1,
                                       thread_name_prefix="catsdogs-decode")

    def __len__(self):
        return self.shape[0]

    def read(self, rows):
        """The images at `rows` (any order, repeats allowed), decoded now.

        Raises:
            RunFailed: a file that decoded when the data was loaded no longer does (it
                changed or went during the run); the line names it.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)

        def decode(index):
            path = self.paths[rows[index]]
            try:
                out[index] = decode_image(path, self.size)
            except UnreadableImage as error:
                raise RunFailed(f"a photo changed or went during the run: {error}", where=path,
                                fix="--cache none decodes every photo again each epoch: leave "
                                    "the photos as they are until the run ends, or train with "
                                    "--cache disk (or ram), which decodes each photo once"
                                ) from None

        try:
            list(self.pool.map(decode, range(len(rows))))
        except RunFailed as error:
            self.failure = self.failure or error
            raise
        return out

    def __del__(self):
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def open_files(paths, size, describe="images"):
    """`paths` checked (read, hashed, decoded small: CHECK_SIZE) and opened to be decoded at
    `size` when read; `describe` names them in the line that says so.

    Returns:
        (DecodeOnRead, rows, kept, skipped, digests), as cache.decode_cached's: `rows[j]` is
        the row of `paths[kept[j]]`; skipped holds (path, reason) of the unreadable files.
    """
    log().info(f"Checking {len(paths)} {describe} (--cache none: decoded again every epoch)")
    checked = decode_many(paths, CHECK_SIZE)
    store = DecodeOnRead([paths[i] for i in checked.kept], size)
    return (store, np.arange(len(checked.kept), dtype=np.int64), checked.kept, checked.skipped,
            checked.digests)
