"""Check a dataset before training on it (the library of `catsdogs doctor`): corrupt files,
duplicates, leakage, imbalance, oddities.

DATA_DIR holds class sub-folders, or train/ and validation/ (or val/, test/) each holding them.
Writes doctor.json (in runs/doctor-<data folder name>-<time>/ unless --out-dir or --out) and
prints a summary. `--fix-into`
writes a cleaned copy: unreadable files dropped, exact duplicates kept once, and validation
images that also appear in training (leakage) dropped from validation; an image found in two
classes is dropped whole (which label is right is for a person to say). The original folder is
only ever read.
"""

import collections
import dataclasses
import hashlib
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from catsdogs import runs
from catsdogs.console import name_some
from catsdogs.errors import CatsDogsError
from catsdogs.data.images import UnreadableImage, decode_image, read_bytes

TINY_SIDE = 32  # px: images smaller than this on a side are flagged
IMBALANCE_RATIO = 1.5  # largest / smallest class count above this is flagged
NEAR_DUPLICATE_BITS = 4  # perceptual hashes this close (of 64 bits) count as near-duplicates
COMMON_FORMATS = ("JPEG", "PNG")


@dataclasses.dataclass
class FileFacts:
    path: str
    split: str
    label: str
    sha256: str
    readable: bool = True
    reason: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    dhash: int = 0


def difference_hash(pixels):
    """64-bit dHash: is each pixel brighter than its right neighbour, on a 9x8 grey thumbnail.
    Robust to resizing and re-encoding, so it finds the same photo saved twice."""
    grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def inspect_file(path, split, label):
    """Facts of one file, read once (through images.read_bytes: never a FIFO or device)."""
    facts = FileFacts(str(path), split, label, "")
    try:
        contents = read_bytes(path)
        facts.sha256 = hashlib.sha256(contents).hexdigest()
        facts.dhash = difference_hash(decode_image(path, (8, 9), contents))  # says why not
        with Image.open(io.BytesIO(contents)) as image:
            facts.width, facts.height, facts.mode = image.width, image.height, image.mode
            facts.format = image.format or ""
    except UnreadableImage as error:
        facts.readable, facts.reason = False, str(error)
    except Exception as error:  # anything Pillow raises while only reading the header
        facts.readable, facts.reason = False, f"corrupt image: {error}"
    return facts


def splits_of(data_dir):
    """{split name: folder of class sub-folders}."""
    from catsdogs.data.datasets import find_split_folders

    pair = find_split_folders(data_dir)
    return {"train": pair[0], "validation": pair[1]} if pair else {"all": Path(data_dir)}


def scan(data_dir):
    """FileFacts for every image file of every split, read in parallel threads; plus (path,
    reason) for the files that were not read (other types, FIFOs, devices, broken links)."""
    from catsdogs.data.datasets import find_images, list_class_folders

    jobs, skipped = [], []
    for split, folder in splits_of(data_dir).items():
        names, class_dirs = list_class_folders(folder)
        for name, class_dir in zip(names, class_dirs):
            images, class_skipped = find_images(class_dir)
            jobs += [(p, split, name) for p in images]
            skipped += class_skipped
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        facts = list(pool.map(lambda job: inspect_file(*job), jobs))
    return facts, skipped


def _near_duplicate_pairs(facts):
    """Pairs of readable files whose dHashes differ in <= NEAR_DUPLICATE_BITS bits, found by
    bucketing on 16-bit slices (pigeonhole: such a pair shares at least one whole slice when
    the distance is below 4, and nearly always at 4), never by comparing all pairs."""
    buckets = collections.defaultdict(list)
    for index, item in enumerate(facts):
        for part in range(4):
            buckets[(part, (item.dhash >> (16 * part)) & 0xFFFF)].append(index)
    pairs = set()
    for members in buckets.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if facts[a].sha256 != facts[b].sha256 and \
                        (facts[a].dhash ^ facts[b].dhash).bit_count() <= NEAR_DUPLICATE_BITS:
                    pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def diagnose(data_dir):
    """Everything doctor finds, as a JSON-ready dict."""
    from catsdogs.data.datasets import NOT_AN_IMAGE

    facts, skipped = scan(data_dir)
    others = [path for path, reason in skipped if reason == NOT_AN_IMAGE]
    special = [{"path": path, "reason": reason} for path, reason in skipped if reason != NOT_AN_IMAGE]
    readable = [f for f in facts if f.readable]
    by_hash = collections.defaultdict(list)
    for item in readable:
        by_hash[item.sha256].append(item)
    duplicate_groups = [[f.path for f in group] for group in by_hash.values() if len(group) > 1]
    leaked = [[f.path for f in group] for group in by_hash.values()
              if len({f.split for f in group}) > 1]
    conflicts = [[f.path for f in group] for group in by_hash.values()
                 if len({f.label for f in group}) > 1]
    near = [(readable[a], readable[b]) for a, b in _near_duplicate_pairs(readable)]
    grayscale = [f.path for f in readable if f.mode in ("1", "L", "LA", "I", "I;16")]
    cmyk = [f.path for f in readable if f.mode == "CMYK"]
    counts = collections.defaultdict(collections.Counter)
    for item in readable:
        counts[item.split][item.label] += 1
    imbalance = {split: round(max(c.values()) / max(1, min(c.values())), 2) for split, c in counts.items()}
    return {
        "data": str(data_dir),
        "files": len(facts) + len(skipped),
        "readable_images": len(readable),
        "counts": {split: dict(sorted(c.items())) for split, c in counts.items()},
        "unreadable": [{"path": f.path, "reason": f.reason} for f in facts if not f.readable],
        "non_images": others,
        "special_files": special,  # FIFOs, devices, sockets, broken links: never opened
        "exact_duplicates": duplicate_groups,
        "leakage": leaked,
        "label_conflicts": conflicts,  # the same image under two class names
        "near_duplicates": [{"paths": [a.path, b.path],
                             "bits_apart": (a.dhash ^ b.dhash).bit_count(),
                             "across_splits": a.split != b.split} for a, b in near],
        "imbalance": {split: ratio for split, ratio in imbalance.items() if ratio > IMBALANCE_RATIO},
        "tiny_images": [f.path for f in readable if min(f.width, f.height) < TINY_SIDE],
        "grayscale": len(grayscale),
        "grayscale_files": grayscale,
        "cmyk": len(cmyk),
        "cmyk_files": cmyk,
        "unusual_format_files": [f.path for f in readable if f.format not in COMMON_FORMATS],
        "formats": dict(collections.Counter(f.format for f in readable)),
    }


def summary_lines(report_dict):
    """The printed summary: a line per check, naming up to console.NAMED of its files (all of
    them are in doctor.json)."""
    r = report_dict
    lines = [f"{r['files']} files, {r['readable_images']} readable images in {r['data']}"]
    for split, counts in r["counts"].items():
        lines.append(f"  {split}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))

    def both(pair):
        return " = ".join(pair)

    checks = [  # (what, the files it names)
        ("unreadable (corrupt, empty, not an image)",
         [f"{u['path']}: {u['reason']}" for u in r["unreadable"]]),
        ("non-image files", r["non_images"]),
        ("special files (not regular files, or broken links), never opened",
         [f"{u['path']}: {u['reason']}" for u in r["special_files"]]),
        ("groups of exact duplicates", [both(group) for group in r["exact_duplicates"]]),
        ("images in more than one split (leakage)", [both(group) for group in r["leakage"]]),
        ("images in more than one class (which label is right?)",
         [both(group) for group in r["label_conflicts"]]),
        ("pairs of near-duplicates", [both(pair["paths"]) for pair in r["near_duplicates"]]),
        (f"images under {TINY_SIDE} px on a side", r["tiny_images"]),
        ("grayscale images", r["grayscale_files"]),
        ("CMYK images", r["cmyk_files"]),
        ("images in unusual formats", r["unusual_format_files"]),
    ]
    for what, files in checks:
        lines.append(f"  {'WARN' if files else 'ok  '} {len(files)} {what}")
        lines += name_some(files)
        if what.startswith("groups of exact") and files and list(r["counts"]) == ["all"]:
            lines.append("       no split folders: training's random validation split can put "
                         "two copies on both sides (--fix-into keeps one)")
    for split, ratio in r["imbalance"].items():
        lines.append(f"  WARN {split}: largest class is {ratio}x the smallest "
                     "(consider --class-weight auto)")
    return lines


def check_copy_target(target, data_dir):
    """A cleaned copy (--fix-into) goes into a new or empty folder outside the data, checked
    before the scan or the training (runs.check_output_folder): inside the data folder, the
    next run would read the copy as more photos (its split folders as a class). Empty means
    no hidden entries either: the copy replaces the folder whole, and so a link would be
    replaced by it, not followed."""
    if Path(target).is_symlink():
        raise CatsDogsError("the folder is a link; the copy would replace the link, not fill the "
                            "folder it leads to", where=target,
                            fix="give --fix-into the folder itself, or a new one")
    runs.check_output_folder(target, "--fix-into", reads=data_dir, replaced_whole=True)


def fix_into(report_dict, data_dir, target):
    """Copy the usable images into `target` with the same layout, dropping what doctor flagged.
    The copy is built beside `target` and swapped in whole (runs.replace_dir): a kill halfway
    leaves no half copy that a training run would take for the cleaned data."""
    target, data_dir = Path(target), Path(data_dir)
    check_copy_target(target, data_dir)
    from catsdogs.data.datasets import TRAIN_NAMES

    drop = {item["path"] for item in report_dict["unreadable"]} | set(report_dict["non_images"])
    for group in report_dict["exact_duplicates"]:
        train_first = sorted(group, key=lambda p: Path(p).relative_to(data_dir).parts[0] not in TRAIN_NAMES)
        drop |= set(train_first[1:])  # keep one copy, the training one when there is one
    for group in report_dict["label_conflicts"]:
        drop |= set(group)
    kept = [path for split_folder in splits_of(data_dir).values()
            for path in sorted(split_folder.rglob("*"))
            if path.is_file() and str(path) not in drop and not path.name.startswith(".")]

    def write(temp):
        for path in kept:
            copy_file(path, temp / path.relative_to(data_dir))

    runs.replace_dir(target, write)
    return len(kept), len(drop)


def copy_file(source, destination):
    """Copy a photo, with its times, into a cleaned copy being built (a new folder)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def quick_warnings(data):
    """The checks cheap enough to run before every training: the same file in training and
    validation (exact content), and class imbalance. Returns printable lines."""
    lines = []
    if data.train.digests and data.val.digests:  # taken while decoding read each file
        train_hashes = set(data.train.digests)
        leaked = [p for p, h in zip(data.val.paths, data.val.digests) if h in train_hashes]
        if leaked:
            lines.append(f"warning: {len(leaked)} validation image(s) also in training, e.g. "
                         f"{leaked[0]}: validation accuracy will read high; see python -m catsdogs.doctor")
    counts = np.bincount(data.train.labels, minlength=len(data.class_names))
    if counts.min() and counts.max() / counts.min() > IMBALANCE_RATIO:
        lines.append(f"warning: classes are imbalanced ({counts.max()} vs {counts.min()} training "
                     "images); consider --class-weight auto")
    return lines
