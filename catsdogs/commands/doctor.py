"""Check a dataset before training on it: corrupt files, duplicates, leakage, imbalance, oddities.

    catsdogs doctor data/cats_and_dogs
    catsdogs doctor ~/PetImages --fix-into ~/PetImages-clean

DATA_DIR holds class sub-folders, or train/ and validation/ (or val/, test/) each holding them.
Writes doctor.json (in the current folder unless --out) and prints a summary. `--fix-into`
writes a cleaned copy: unreadable files dropped, exact duplicates kept once, and validation
images that also appear in training (leakage) dropped from validation. The original folder is
only ever read.
"""

from pathlib import Path

from catsdogs import runs
from catsdogs.config import command_parser
from catsdogs.data.doctor import diagnose, fix_into, summary_lines
from catsdogs.errors import command_main


def build_parser():
    parser = command_parser("doctor", __doc__)
    parser.add_argument("data_dir", help="class sub-folders, or train/ and validation/ of them")
    parser.add_argument("--out", default="doctor.json", help="report file [default: doctor.json]")
    parser.add_argument("--fix-into", metavar="DIR", help="write a cleaned copy into DIR")
    return parser


def _run(args):
    data_dir = Path(args.data_dir)
    result = diagnose(data_dir)
    out = Path(args.out)
    runs.write_json(out, result)
    print("\n".join(summary_lines(result)))
    print(f"Details: {out}")
    if args.fix_into:
        copied, dropped = fix_into(result, data_dir, args.fix_into)
        print(f"Cleaned copy: {copied} files in {args.fix_into} ({dropped} left out)")
    return 0


main = command_main(build_parser, _run)
