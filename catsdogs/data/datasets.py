"""Images in: class folders or CIFAR-10 -> decoded, labelled splits (tf_pipeline.py batches them).

Every file is decoded once, in parallel, before training (images.decode_many): unreadable
files are reported and skipped, never moved or rewritten, and the decoded pixels stay in memory
or, with `--cache disk` (or `auto` when they would not fit), in a disk cache that later runs
reuse (cache.py), so each epoch costs only augmentation, not JPEG decoding (the seed tutorial's
ImageDataGenerator decodes every photo again every epoch). `--cache none`, for folders too big
even for the disk, does decode every epoch (streamed.py), behind the disk cache's interface.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.console import log
from catsdogs.data.cache import Storage
from catsdogs.data.download import CIFAR10_CLASSES, cifar10_arrays
from catsdogs.data.images import decode_many, has_image_extension, irregular_reason, is_hidden
from catsdogs.errors import CatsDogsError

TRAIN_NAMES = ("train", "training")
VALIDATION_NAMES = ("validation", "val", "valid", "test")
MIN_CALIBRATION_IMAGES = 100  # fewer photos cannot pin one temperature down


@dataclasses.dataclass
class Split:
    """One split's decoded images, uint8 (n, height, width, 3), and int labels (n,).

    `store` holds the pixels: an array in memory, or a disk cache's pixels file
    (cache.DiskArray) or files decoded when read (streamed.DecodeOnRead), of which `rows`
    names this split's images in order (None: all of them). A subset of a disk-backed split
    keeps row numbers, not pixels, so carving splits out of it never reads the cache into
    memory (fancy indexing would copy)."""

    store: object  # np.ndarray, cache.DiskArray, streamed.DecodeOnRead or JoinedStore
    labels: np.ndarray
    paths: list  # source file of each image; empty for in-memory datasets
    digests: list = dataclasses.field(default_factory=list)  # SHA-256 of each path's file
    rows: np.ndarray | None = None  # disk-backed: each image's row in `store`

    def __len__(self):
        return len(self.labels)

    @property
    def on_disk(self):
        return not isinstance(self.store, np.ndarray)

    @property
    def pixels(self):
        """All of the split's pixels as one array in memory: for the small held-out splits;
        training gathers batches instead (tf_pipeline.make_dataset)."""
        if not self.on_disk and self.rows is None:
            return self.store
        return self.gather(np.arange(len(self)))

    def gather(self, indices):
        """The pixels of the split's images at `indices`, read from wherever they are."""
        rows = np.asarray(indices) if self.rows is None else self.rows[np.asarray(indices)]
        return self.store.read(rows) if self.on_disk else self.store[rows]

    def pixel_view(self):
        """The split's pixels for code written against an array that reads a part at a time
        (batches, a gallery): the array itself in memory, else a PixelView that reads only
        the images indexed."""
        return self.store if not self.on_disk and self.rows is None else PixelView(self)

    def subset(self, indices):
        """The images at `indices`, with their labels, paths and digests."""
        indices = np.asarray(indices, dtype=np.int64)
        paths = [self.paths[i] for i in indices] if self.paths else []
        digests = [self.digests[i] for i in indices] if self.digests else []
        if self.on_disk:
            rows = indices if self.rows is None else self.rows[indices]
            return Split(self.store, self.labels[indices], paths, digests, rows)
        return Split(self.pixels[indices], self.labels[indices], paths, digests)

    def counts(self, class_names):
        per_class = np.bincount(self.labels, minlength=len(class_names))
        return {name: int(count) for name, count in zip(class_names, per_class)}

    @classmethod
    def concat(cls, splits):
        """The images of `splits`, one split after another. In memory, their arrays joined;
        disk-backed, their stores joined instead of their pixels (rows into the one store they
        share, or into a JoinedStore of theirs), so nothing is read until a batch is."""
        labels = np.concatenate([split.labels for split in splits])
        paths = sum((split.paths for split in splits), []) if all(s.paths for s in splits) else []
        digests = (sum((split.digests for split in splits), [])
                   if all(s.digests for s in splits) else [])
        if not any(split.on_disk for split in splits):
            return cls(np.concatenate([split.pixels for split in splits]), labels, paths, digests)
        if not all(split.on_disk for split in splits):
            raise ValueError("cannot join splits in memory to splits read from disk")
        stores = []  # each once: splits carved from one load share theirs
        for split in splits:
            if not any(split.store is store for store in stores):
                stores.append(split.store)
        first_rows = np.cumsum([0] + [len(store) for store in stores])

        def joined_rows(split):
            first = next(first for store, first in zip(stores, first_rows) if store is split.store)
            return first + (np.arange(len(split)) if split.rows is None else split.rows)

        store = stores[0] if len(stores) == 1 else JoinedStore(stores)
        rows = np.concatenate([joined_rows(split) for split in splits]).astype(np.int64)
        return cls(store, labels, paths, digests, rows)


class PixelView:
    """A disk-backed split's pixels, read when indexed: `view[a:b]`, `view[indices]` (a
    boolean mask too) and `view[i]` read those images alone (Split.gather)."""

    def __init__(self, split):
        self.split = split
        self.shape = (len(split), *split.store.shape[1:])
        self.dtype = split.store.dtype

    def __len__(self):
        return len(self.split)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.split.gather(np.arange(len(self))[key])
        if np.ndim(key) == 0:
            return self.split.gather([key])[0]
        key = np.asarray(key)
        return self.split.gather(np.flatnonzero(key) if key.dtype == bool else key)


class JoinedStore:
    """Several stores of rows (cache.DiskArray, streamed.DecodeOnRead) read as one, as they
    are read: `read(rows)` reads each row from the store it falls in (row r of the second
    store is row len(first) + r here). The union of two folders' disk caches (Split.concat)."""

    def __init__(self, stores):
        self.stores = list(stores)
        if len({store.shape[1:] for store in self.stores}) != 1:
            raise ValueError(f"stores of other image shapes: {[s.shape for s in self.stores]}")
        self.first_rows = np.cumsum([0] + [len(store) for store in self.stores])[:-1]
        self.shape = (sum(map(len, self.stores)), *self.stores[0].shape[1:])
        self.dtype = self.stores[0].dtype

    def __len__(self):
        return self.shape[0]

    @property
    def failure(self):
        """The error one of the stores raised reading (streamed.DecodeOnRead's), or None."""
        return next(filter(None, (getattr(store, "failure", None) for store in self.stores)),
                    None)

    def read(self, rows):
        """The images at `rows` (any order, repeats allowed), each store read once."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.first_rows, rows, side="right") - 1
        for index in np.unique(which):
            chosen = which == index
            out[chosen] = self.stores[index].read(rows[chosen] - self.first_rows[index])
        return out


@dataclasses.dataclass
class ImageData:
    class_names: list
    train: Split
    val: Split  # chooses the best epoch (with a selection split: carved from the training images)
    skipped: list  # (path, reason) for every file that could not be used
    sources: dict  # split name -> where it came from
    test: Split | None = None  # with a selection split: the data's own validation split, used once
    calibration: Split | None = None  # held-out photos that chose nothing: fit the temperature
    storage: dict | None = None  # where the decoded pixels were: ram, or which disk caches

    def summary(self):
        """Class names and per-class counts, for printing and dataset.json."""
        splits = {"train": self.train, "validation": self.val, "test": self.test,
                  "calibration": self.calibration if self.calibration is not self.val else None}
        return {"class_names": self.class_names, "sources": self.sources,
                "counts": {name: split.counts(self.class_names)
                           for name, split in splits.items() if split is not None},
                "skipped": len(self.skipped),
                **({"pixels": self.storage} if self.storage else {})}

    def photo_roles(self, chooses):
        """Which photos did what in a run (photos.json): each role's source, count and files,
        so anyone can check that the photos that chose the model, those that fitted the
        temperature and those that measured it are apart."""
        def role(split, source):
            if split is None:
                return None
            return {"source": self.sources.get(source), "count": len(split),
                    "files": [str(p) for p in split.paths]}

        return {"trained_on": role(self.train, "train"),
                "chose_the_model": role(self.val, "validation") if chooses else None,
                "monitored_only": None if chooses else role(self.val, "validation"),
                "fitted_the_temperature": role(self.calibration, "calibration"),
                "tested_once": role(self.test, "test")}

    def with_choice_photos_trained(self, share):
        """A refit's data: the photos that chose the epoch join the training photos; the
        photos set aside to fit the temperature are what it validates on (to watch, not to
        choose) and calibrates on; the test split stays the test split."""
        if self.calibration is None or self.calibration is self.val:
            raise refit_without_calibration(share, len(self.val))
        train = Split.concat([self.train, self.val])
        sources = {**self.sources, "train": f"{self.sources['train']} and the photos that chose "
                                             f"the epoch ({self.sources['validation']})",
                   "validation": self.sources["calibration"]}
        return dataclasses.replace(self, train=train, val=self.calibration, sources=sources)

    def set_aside_calibration(self, share, chooses, seed, minimum=0):
        """ImageData with photos to fit the temperature on that chose nothing.

        When the validation (or selection) split `chooses` the kept model (the best epoch, an
        early stop), the temperature fitted on it would see the model where it looks best:
        `share` of each class is then moved out of `val` into `calibration`. When nothing is
        chosen on `val` (the last epoch is kept), all of it calibrates. `share` 0 (runs made
        before this existed) sets nothing aside: no calibration photos. Nor does a share
        that would hold fewer than `minimum` photos (MIN_CALIBRATION_IMAGES for a run started
        today): a temperature fitted on them would be refused, so taking them away from the
        choice would only make it noisier."""
        if not chooses:
            calibration, source = self.val, self.sources["validation"]
            return dataclasses.replace(self, calibration=calibration,
                                       sources={**self.sources, "calibration": source})
        if not share or np.bincount(self.val.labels).min() < 2:
            return self  # nothing to set aside: each class needs a photo on both sides
        if share * len(self.val) < minimum:
            log().info(f"Calibration: {share:.0%} of the {len(self.val)} validation photos is "
                       f"fewer than the {minimum} a temperature needs: none set aside, all of "
                       "them choose the model, T = 1")
            return self
        choose_idx, calibrate_idx = stratified_split(self.val.labels, share, seed + 1,
                                                     self.class_names, "--calibration-split")
        source = self.sources["validation"]
        return dataclasses.replace(
            self, val=self.val.subset(choose_idx), calibration=self.val.subset(calibrate_idx),
            sources={**self.sources,
                     "validation": f"{source}, less the photos set aside to fit the temperature",
                     "calibration": f"{source}: {share:.0%} of each class (seed {seed + 1}) "
                                    "set aside to fit the temperature"})

    def carve_selection(self, fraction, seed):
        """ImageData whose `val` is `fraction` of each class's training images (by `seed`) and
        whose `test` is this data's validation split: the split that picks the epoch (and any
        recipe tuned on it) is then never the one the result is reported on."""
        train_idx, selection_idx = stratified_split(self.train.labels, fraction, seed,
                                                    self.class_names, "--selection-split")
        source = (f"{self.sources['train']} (selection split: {fraction:.0%} of each class, "
                  f"seed {seed})")
        return ImageData(self.class_names, self.train.subset(train_idx),
                         self.train.subset(selection_idx), self.skipped,
                         {"train": self.sources["train"], "validation": source,
                          "test": self.sources["validation"]}, test=self.val,
                         storage=self.storage)


# ---------------------------------------------------------------- finding files


def folder_not_found(folder, flag=None):
    """The error for a folder that is not there, naming the flag that gave it; a relative path
    says where it was looked for (a run's config.json written before 2026-12-06 gives its
    folders relative to the folder it was trained from)."""
    folder = Path(folder)
    relative = (f" (a relative one: from {Path.cwd()}; a run's config.json written before "
                "2026-12-06 gives its folders relative to where it was trained: run the command "
                "from there)") if not folder.is_absolute() else ""
    return CatsDogsError("folder not found", where=f"{flag} {folder}" if flag else folder,
                         fix="check the path" + relative)


def list_class_folders(folder, min_classes=2):
    """Class names (sorted sub-folder names) and their folders, checked for a usable layout:
    at least `min_classes` (2 to train on; a model measures on 1, a test folder of cats only)."""
    folder = Path(folder)
    if not folder.exists():
        raise folder_not_found(folder)
    if not folder.is_dir():
        raise CatsDogsError("not a folder", where=folder, fix="pass a folder of class sub-folders")
    if (folder / runs.CONFIG_FILE).is_file() and (folder / runs.MODEL_FILE).exists():
        raise CatsDogsError("this is a catsdogs run folder, not photos", where=folder,
                            fix="give a folder of class sub-folders of photos (a run folder "
                                "is the model: --resume continues it, --weights starts from it)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p))
    if len(classes) < min_classes:
        found = f"only {classes[0].name!r}" if classes else "none"
        wanted = "two class sub-folders" if min_classes == 2 else "one class sub-folder"
        raise CatsDogsError(f"need at least {wanted}, found {found}", where=folder,
                            fix="put each class's images in its own sub-folder, e.g. cats/ and dogs/")
    # folder names from anyone's archive become class names that travel with the model
    return runs.check_class_names([p.name for p in classes], folder), classes


NOT_AN_IMAGE = "not an image file type (by its extension)"


def find_images(folder):
    """(image files, skipped) below `folder`, recursively, sorted; dot-files ignored.

    `skipped` holds (path, reason) for files of other types and for anything that is not a
    regular file (a FIFO, device or socket, a dangling link, a link loop): those are never
    opened, so a named pipe called `x.jpg` cannot hang a command. Links to regular files count
    as the files they point to.
    """
    images, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            if is_hidden(name):
                continue
            path = os.path.join(root, name)
            reason = irregular_reason(path) or (None if has_image_extension(name) else NOT_AN_IMAGE)
            if reason:
                skipped.append((path, reason))
            else:
                images.append(path)
    return images, skipped


def scan_class_folders(folder, min_classes=2):
    """Files and labels of a folder of class sub-folders (at least `min_classes`).

    Returns:
        (class_names, paths, labels, skipped) where skipped lists non-image files.
    """
    class_names, class_dirs = list_class_folders(folder, min_classes)
    paths, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        images, class_skipped = find_images(class_dir)
        if not images:
            raise CatsDogsError("class folder has no images", where=class_dir,
                                fix="add JPEG, PNG, BMP, GIF, WebP or TIFF images, or remove the folder")
        paths += images
        labels += [label] * len(images)
        skipped += class_skipped
    return class_names, paths, np.array(labels, dtype=np.int32), skipped


def find_split_folders(folder):
    """(train, validation) sub-folders of `folder` if it has both, else None."""
    folder = Path(folder)
    train = next((folder / n for n in TRAIN_NAMES if (folder / n).is_dir()), None)
    val = next((folder / n for n in VALIDATION_NAMES if (folder / n).is_dir()), None)
    return (train, val) if train and val else None


def in_model_order(labels, folder_names, class_names, where):
    """`labels` (indices into `folder_names`, a folder's classes) as the model's class indices;
    a folder that is no class of the model is one line naming `where`."""
    unknown = [n for n in folder_names if n not in class_names]
    if unknown:
        held = next((n for n in VALIDATION_NAMES if n in folder_names), None)
        fix = (f"pass its {held}/ folder, {Path(where) / held}: this one holds the splits, "
               "not the classes" if held and set(unknown) <= {*TRAIN_NAMES, *VALIDATION_NAMES}
               else "use folders named like the model's classes")
        raise CatsDogsError(f"class folders {unknown} are not classes of the model {class_names}",
                            where=where, fix=fix)
    return np.array([class_names.index(n) for n in folder_names], dtype=int)[labels]


def stratified_split(labels, fraction, seed, class_names, flag="--val-split"):
    """Indices (train, val): `fraction` of each class to validation, shuffled by `seed`; a
    class too small for both sides is named (`class_names`) in the error."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, round(len(members) * fraction))
        if n_val >= len(members):
            raise CatsDogsError(f"class {class_names[label]!r} has too few images to split "
                                f"({len(members)})",
                                where=flag, fix="add images, or a smaller fraction")
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ---------------------------------------------------------------- decoding


def decode_split(paths, labels, image_size, where, storage=None, describe=None):
    """(Split, skipped) of `paths` (files of folder `where`) with their `labels`, decoded in
    memory, or through the disk cache of `where` (storage.mode disk), or checked and decoded
    when read (none); skipped holds (path, reason) of the unreadable files. One line says
    which, naming the files by `describe` ("training images from DIR"; in memory, no line
    without it)."""
    if storage is not None and storage.mode in ("disk", "none"):
        store, rows, kept, skipped, digests = storage.decode(paths, image_size, where, describe)
        return Split(store, labels[kept], [paths[i] for i in kept], digests, rows), skipped
    if describe:
        log().info(f"Decoding {len(paths)} {describe}")
    pixels, kept, skipped, digests = decode_many(paths, image_size)
    return Split(pixels, labels[kept], [paths[i] for i in kept], digests), skipped


def _decode_split(paths, labels, image_size, class_names, where, storage, describe):
    """decode_split, where a class left with no readable image is an error."""
    split, skipped = decode_split(paths, labels, image_size, where, storage, describe)
    for name, count in split.counts(class_names).items():
        if count == 0:
            raise CatsDogsError(f"no readable images for class {name!r}", where=where,
                                fix="see skipped.csv in the run folder for each file's reason")
    return split, skipped


def load_labelled_folder(folder, image_size, storage=None):
    """(class names, Split) of one folder of class sub-folders, decoded (`storage`: where the
    pixels go, cache.Storage; default in memory)."""
    class_names, paths, labels, _ = scan_class_folders(folder)
    _settle(storage, len(paths), image_size)
    split, _ = _decode_split(paths, labels, image_size, class_names, folder, storage,
                             f"images from {folder}")
    return class_names, split


def _sharded(paths, labels, shard):
    """Worker `shard[0]` of `shard[1]`: every n-th file, before anything is decoded."""
    index, count = shard
    return paths[index::count], labels[index::count]


def _shard_note(shard):
    return "" if shard[1] == 1 else f" (worker {shard[0]}'s shard of {shard[1]})"


def _settle(storage, images, image_size):
    """Settle `--cache auto` once the number of images to decode is known."""
    if storage is not None:
        storage.decide(images, image_size)


def load_folders(train_dir, val_dir, image_size, shard=(0, 1), storage=None):
    """Two folders of class sub-folders with the same classes -> ImageData; with `shard`
    (index, count), only that worker's share of each folder's files is decoded; `storage`
    (cache.Storage) says where the pixels go (default: in memory)."""
    class_names, train_paths, train_labels, skipped = scan_class_folders(train_dir)
    val_names, val_paths, val_labels, val_skipped = scan_class_folders(val_dir)
    if val_names != class_names:
        raise CatsDogsError(f"validation classes {val_names} differ from training classes "
                            f"{class_names}", where=val_dir, fix="use the same class sub-folders")
    train_paths, train_labels = _sharded(train_paths, train_labels, shard)
    val_paths, val_labels = _sharded(val_paths, val_labels, shard)
    _settle(storage, len(train_paths) + len(val_paths), image_size)
    train, bad = _decode_split(train_paths, train_labels, image_size, class_names, train_dir,
                               storage, f"training images from {train_dir}{_shard_note(shard)}")
    val, val_bad = _decode_split(val_paths, val_labels, image_size, class_names, val_dir,
                                 storage, f"validation images from {val_dir}{_shard_note(shard)}")
    return ImageData(class_names, train, val, skipped + bad + val_skipped + val_bad,
                     {"train": str(train_dir), "validation": str(val_dir)})


def load_split_folder(folder, image_size, val_split, seed, shard=(0, 1), storage=None):
    """One folder of class sub-folders, split into train/validation per class by `seed`.

    One worker splits the decoded images (unreadable files left out first); several split the
    file list, so that each decodes only its shard of each part."""
    class_names, paths, labels, skipped = scan_class_folders(folder)
    source = f"{folder} (split {1 - val_split:.0%}/{val_split:.0%}, seed {seed})"
    _settle(storage, -(-len(paths) // shard[1]), image_size)
    if shard[1] == 1:
        everything, bad = _decode_split(paths, labels, image_size, class_names, folder,
                                        storage, f"images from {folder}")
        train_idx, val_idx = stratified_split(everything.labels, val_split, seed, class_names)
        return ImageData(class_names, everything.subset(train_idx), everything.subset(val_idx),
                         skipped + bad, {"train": source, "validation": source})
    parts, bad = [], []
    for indices in stratified_split(labels, val_split, seed, class_names):
        part_paths, part_labels = _sharded([paths[i] for i in indices], labels[indices], shard)
        split, part_bad = _decode_split(part_paths, part_labels, image_size, class_names, folder,
                                        storage, f"images from {folder}{_shard_note(shard)}")
        parts.append(split)
        bad += part_bad
    return ImageData(class_names, *parts, skipped + bad, {"train": source, "validation": source})


def download_cifar10(image_size, shard=(0, 1)):
    """CIFAR-10 through Keras' own downloader (checksum pinned by Keras) and cache."""
    (x_train, y_train), (x_test, y_test) = cifar10_arrays(
        "--dataset cifar10", "go online, or pass --data FOLDER holding train/ and test/ class "
                             "folders of CIFAR-10 images (catsdogs download cifar10 writes one)")
    if tuple(image_size) != x_train.shape[1:3]:
        raise CatsDogsError(f"CIFAR-10 images are 32x32, the preset takes {image_size}",
                            where="--preset", fix="use a 32x32 preset such as seed-cifar10")
    def as_split(pixels, labels):
        pixels, labels = _sharded(pixels, labels, shard)
        return Split(pixels, labels.reshape(-1).astype(np.int32), [])

    return ImageData(list(CIFAR10_CLASSES), as_split(x_train, y_train), as_split(x_test, y_test),
                     [], {"train": "keras.datasets.cifar10 (train)",
                          "validation": "keras.datasets.cifar10 (test)"})


def source_folders(config):
    """The folders of class sub-folders a resolved TrainConfig reads, each decoded (and
    cached) as one: --train-dir and --val-dir, --data's train/ and validation/, or --data."""
    if config.train_dir is not None:
        return (config.train_dir, config.val_dir)
    if config.data is not None:
        return find_split_folders(config.data) or (config.data,)
    return ()  # CIFAR-10 through Keras' download


def check_sources(config):
    """The folders a resolved TrainConfig names exist and hold class sub-folders with images.
    Listing files is quick and needs no TensorFlow, so a wrong path or an empty class is one
    line at once, before seconds of imports and minutes of decoding; a folder that is not
    there names the flag that gave it."""
    for flag in ("data", "train_dir", "val_dir"):
        folder = getattr(config, flag)
        if folder is not None and not Path(folder).exists():
            raise folder_not_found(folder, f"--{flag.replace('_', '-')}")
    for folder in source_folders(config):
        scan_class_folders(folder)


def cache_for_workers(config, image_size):
    """--cache settled once for the workers of one machine (--local-workers), and with disk
    the caches filled before they start; returns the mode they are to use.

    `auto` counts every worker's images, not one shard's: the workers share this machine's
    memory. Each source folder's cache gets all its files, so every worker finds its shard
    there, decodes nothing and reads only its own rows; left to the workers, each would take
    the cache's lock in turn to add its shard, rewriting the pixels file the others filled."""
    folders = source_folders(config)
    if not folders:
        return config.cache
    storage = Storage.of(config)
    listed = [scan_class_folders(folder)[1] for folder in folders]
    storage.decide(sum(map(len, listed)), image_size)
    if storage.mode == "disk":
        for folder, paths in zip(folders, listed):
            storage.decode(paths, image_size, folder)
    return storage.mode


class DecodedSources:
    """The decoded sources of the runs one process trains one after another on the same
    photos (a search's trials, `train --seeds`), kept from the first that decoded them: runs
    differ in their recipe, never in their pixels (a 3-trial CIFAR-10 search ran 1.12-1.16x
    faster, bench/RESULTS.md "A search's photos decoded once"). The carving into selection
    and calibration photos is still done per run, by its own settings."""

    def __init__(self):
        self._kept = {}

    def load(self, config, image_size, shard):
        """(ImageData as `_load_sources` returns it, the storage's record for dataset.json)."""
        key = (config.dataset, config.data, config.train_dir, config.val_dir, config.val_split,
               config.roles_seed, config.cache, config.cache_dir,
               getattr(config, "cache_source", None), tuple(image_size), tuple(shard))
        if key not in self._kept:
            storage = Storage.of(config)
            data = _load_sources(config, image_size, shard, storage)
            self._kept[key] = data, storage.record()
        else:
            log().info("Images: decoded by an earlier run of this process, reused")
        return self._kept[key]


def load_image_data(config, image_size, shard=(0, 1), decoded=None):
    """The ImageData a resolved TrainConfig asks for (with its selection split carved out of
    the training images when it sets one); with `shard` (worker index, worker count), only
    that worker's share of the files, each split taken every n-th file; `decoded`
    (DecodedSources) reuses the pixels an earlier run of this process decoded."""
    data, record = (decoded or DecodedSources()).load(config, image_size, shard)
    data = dataclasses.replace(data, storage=record)
    if config.selection_split:
        data = data.carve_selection(config.selection_split, config.roles_seed)
    # a refit's photos are carved as its parent's were: that run chose its epoch on them
    data = data.set_aside_calibration(config.calibration_split,
                                      chooses_on_validation(config) or config.refit_union,
                                      config.roles_seed, calibration_minimum(config, shard))
    if config.refit and data.calibration is None:  # found now, not after the first training
        raise refit_without_calibration(config.calibration_split, len(data.val))
    return data.with_choice_photos_trained(config.calibration_split) if config.refit_union else data


def calibration_minimum(config, shard=(0, 1)):
    """The fewest photos a run sets aside for its temperature (config.json's, else today's
    MIN_CALIBRATION_IMAGES). Workers of a multi-worker run each hold a shard and must all
    decide alike, so they keep the rule of runs before the minimum: the share set aside."""
    if shard[1] > 1:
        return 0
    return MIN_CALIBRATION_IMAGES if config.calibration_minimum is None \
        else config.calibration_minimum


def refit_without_calibration(share, validation_images):
    """The error for a refit with no photos set aside: it would train on all the held-out
    photos, leaving none to watch or to fit a temperature on."""
    if not share:
        return CatsDogsError("a refit needs photos set aside for calibration", where="--refit",
                             fix="give --calibration-split 0.5 (its default)")
    return CatsDogsError(f"a refit needs at least {MIN_CALIBRATION_IMAGES} photos set aside for "
                         f"calibration, and {share:.0%} of the {validation_images} validation "
                         "photos is fewer", where="--refit",
                         fix="give more validation photos (or a larger --selection-split), or "
                             "drop --refit")


def chooses_on_validation(config):
    """Whether the validation (or selection) split chooses the model a run keeps: its epoch,
    or the run itself among a search's trials."""
    return config.keep_epoch != "last" or bool(config.patience) or config.selection_chooses_runs


def _load_sources(config, image_size, shard, storage):
    if config.train_dir is not None:
        return load_folders(config.train_dir, config.val_dir, image_size, shard, storage)
    if config.data is None:  # resolve_config only leaves this for --dataset cifar10
        return download_cifar10(image_size, shard)
    splits = find_split_folders(config.data)
    if splits:
        return load_folders(*splits, image_size, shard=shard, storage=storage)
    return load_split_folder(config.data, image_size, config.val_split, config.roles_seed, shard,
                             storage)
