"""Label audit on real photos: does `doctor --label-issues` find labels flipped on purpose?

    python bench/audit.py                  # 3 % of cats_and_dogs/train flipped, in a copy
    python bench/audit.py --unmodified     # the original folder, only read: its own suspects
    python bench/audit.py --flip 0.05 --folds 5 --preset fast-catsdogs --epochs 11

Copies ../shared/data/cats_and_dogs/train into a temporary folder, moves a seeded share (3 %)
of each class's photos into the other class's folder there (the original is never written),
runs the audit (fast-catsdogs, 5 folds) and prints recall (planted flips among the suspects /
planted flips), precision (planted flips among the suspects / suspects), the time taken
(decoding, every fold's training and prediction, cleanlab; not Python's imports), the k-fold
accuracy and every suspect. Photos the original set already mislabels count against precision
here; `--unmodified` lists them.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catsdogs.training.audit import AuditConfig, audit_labels, summary_lines  # noqa: E402
from machine import SHARED_DATA, describe  # noqa: E402

DATA = SHARED_DATA / "cats_and_dogs" / "train"


def plant_flips(folder, share, seed):
    """Move `share` of each class's images (chosen by `seed`) into another class's folder;
    return the moved files' new paths."""
    from catsdogs.data.datasets import scan_class_folders

    class_names, paths, labels, _ = scan_class_folders(folder)
    rng = np.random.default_rng(seed)
    planted = set()
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        others = [other for other in class_names if other != name]
        for index in rng.choice(members, size=round(share * len(members)), replace=False):
            source = Path(paths[index])
            target = folder / others[rng.integers(len(others))] / source.name
            if target.exists():
                target = target.with_name(f"{source.stem}-flipped{source.suffix}")
            shutil.move(source, target)
            planted.add(str(target))
    return planted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unmodified", action="store_true",
                        help="audit the original folder (read only) and list its suspects")
    parser.add_argument("--flip", type=float, default=0.03, help="share of each class flipped")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--preset", default="fast-catsdogs")
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0, help="chooses the flipped photos")
    parser.add_argument("--out", help="keep the audit's folder here (label_issues.csv, the "
                                      "gallery of suspects); default: a temporary folder")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"bench/audit.py: {DATA} is absent; this benchmark needs the cats/dogs photos in "
              "../shared/data. Nothing to do.")
        return 0
    print(describe())
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as temp:
        temp = Path(temp)
        planted = set()
        data = DATA
        if not args.unmodified:
            data = temp / "train"
            shutil.copytree(DATA, data)
            planted = plant_flips(data, args.flip, args.seed)
            print(f"planted {len(planted)} flipped labels ({args.flip:.0%} of each class, seed "
                  f"{args.seed}) in a copy of {DATA}")
        config = AuditConfig(data=str(data), folds=args.folds, preset=args.preset,
                             epochs=args.epochs, out_dir=args.out or str(temp / "audit"))
        started = time.perf_counter()
        audit = audit_labels(config)
        seconds = time.perf_counter() - started
        print("\n".join(summary_lines(audit)[:1]))
        print(f"time: {seconds:.0f} s for {args.folds} folds of {len(audit.images.split)} images "
              f"with {args.preset}")
        suspects = [issue.path for issue in audit.issues]
        if planted:
            found = len(planted & set(suspects))
            print(f"recall    {found / len(planted):.3f}  ({found} of {len(planted)} planted "
                  f"flips among the suspects)")
            print(f"precision {found / max(1, len(suspects)):.3f}  ({found} of {len(suspects)} "
                  f"suspects were planted)")
            top = len(planted & set(suspects[:len(planted)]))
            print(f"precision {top / len(planted):.3f} in the top {len(planted)} suspects (as many "
                  f"as were planted: {top} of them planted)")
        print(f"suspects ({len(suspects)}), most suspect first:")
        for issue in audit.issues:
            mark = "planted " if issue.path in planted else ""
            shown = Path(issue.path).relative_to(data)
            print(f"  {issue.rank:>4}  {mark}{shown}: labelled {issue.given}, looks like "
                  f"{issue.suggested} (p = {issue.self_confidence:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
