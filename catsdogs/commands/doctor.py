"""Check a dataset before training on it: corrupt files, duplicates, leakage, imbalance, oddities.

    catsdogs doctor data/cats_and_dogs
    catsdogs doctor ~/PetImages --fix-into ~/PetImages-clean
    catsdogs doctor ~/PetImages --label-issues                   # 5 models, minutes each
    catsdogs doctor ~/PetImages --label-issues --folds 3 --fix-into ~/PetImages-relabelled --relabel

DATA_DIR holds class sub-folders, or train/ and validation/ (or val/, test/) each holding them.
Writes doctor.json into runs/doctor-<data folder name>-<time>/ (or --out-dir, or the file --out)
and prints a summary and where it is. `--fix-into`
writes a cleaned copy: unreadable files dropped, exact duplicates kept once, and validation
images that also appear in training (leakage) dropped from validation. The original folder is
only ever read.

`--label-issues` audits the labels instead: one model per fold (stratified, seeded) predicts
the images it never saw, and cleanlab ranks the likely label errors from those out-of-fold
probabilities; it prints the k-fold accuracy (mean ± std, each fold) and the first suspects
(warning when the models score near chance),
and writes label_issues.csv, label_issues.png and folds.json into its folder
(runs/label-audit-<data folder name>/ unless --out-dir). Run again with the same flags, it skips
the folds it finished. With --fix-into, the copy leaves the suspects out, or puts each in its
suggested class folder with --relabel.
"""

from pathlib import Path

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.console import log
from catsdogs.data.doctor import check_copy_target, diagnose, fix_into, summary_lines
from catsdogs.errors import CatsDogsError, command_main

REPORT_FILE = "doctor.json"


def build_parser():
    from catsdogs.training.audit import AuditConfig  # no Keras: --help stays quick

    parser = cfg.command_parser("doctor", __doc__)
    parser.add_argument("data_dir", help="class sub-folders, or train/ and validation/ of them")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="folder for doctor.json, or the label audit's folder (kept to "
                             "resume it) [default: runs/doctor-<data folder name>-<time>, "
                             "runs/label-audit-<data folder name>]")
    parser.add_argument("--out", metavar="FILE",
                        help="report file of the file checks, instead of DIR/doctor.json")
    parser.add_argument("--fix-into", metavar="DIR", help="write a cleaned copy into DIR")
    labels = parser.add_argument_group("label audit")
    labels.add_argument("--label-issues", action="store_true",
                        help="instead of the file checks: train --folds models, each predicting "
                             "the images it never saw, and rank likely label errors (cleanlab)")
    labels.add_argument("--relabel", action="store_true",
                        help="with --label-issues --fix-into: copy each suspect into its suggested "
                             "class folder instead of leaving it out")
    cfg.add_flags(parser, AuditConfig, skip=("data", "out_dir"))
    return parser


def _run(args):
    from catsdogs.training.audit import AuditConfig

    audit_flags = cfg.given_flags(args, AuditConfig)
    audit_flags.pop("out_dir", None)  # --out-dir: its own flag, for both kinds of check
    if args.label_issues:
        return _audit_labels(args, AuditConfig(data=args.data_dir, out_dir=args.out_dir,
                                                **audit_flags))
    if audit_flags or args.relabel:
        given = [f"--{cfg.flag_name(name)}" for name in audit_flags] + ["--relabel"] * args.relabel
        raise CatsDogsError("label audit flags without --label-issues", where=", ".join(given),
                            fix="add --label-issues, or drop them")
    data_dir = Path(args.data_dir)
    if args.fix_into:
        check_copy_target(args.fix_into, data_dir)  # before the scan, not after it
    if args.out:
        _check_report_file(Path(args.out), data_dir, args.out_dir)
    elif args.out_dir:
        runs.check_output_folder(args.out_dir, "--out-dir", reads=data_dir, ours=(REPORT_FILE,))
    result = diagnose(data_dir)
    out = Path(args.out) if args.out else _report_folder(args.out_dir, data_dir) / REPORT_FILE
    runs.write_json(out, result)
    print("\n".join(summary_lines(result)))
    print(f"Details: {out}")
    if args.fix_into:
        copied, dropped = fix_into(result, data_dir, args.fix_into)
        print(f"Cleaned copy: {copied} files in {args.fix_into} ({dropped} left out)")
    return 0


def _check_report_file(out, data_dir, out_dir):
    """--out, checked before the scan: a new file, or an earlier doctor report (doctor never
    writes over another file), outside the data it checks."""
    if out_dir:
        raise CatsDogsError("--out and --out-dir both name where the report goes",
                            where="--out, --out-dir", fix="give one of them")
    if out.is_dir():
        raise CatsDogsError("--out is a folder", where=out,
                            fix="give --out a file name, or the folder as --out-dir")
    runs.check_outside(out, data_dir, "--out")
    if out.exists() and not _is_doctor_report(out):
        raise CatsDogsError("the file exists and is not a doctor report: doctor writes over "
                            "no other file", where=out, fix="give --out a new file name")
    runs.check_writable(out.parent)


def _is_doctor_report(path):
    """Whether `path` holds a report doctor wrote (its keys), read only when small."""
    report = runs.earlier_json_output(path)
    return report is not None and {"data", "files", "readable_images"} <= report.keys()


def _report_folder(out_dir, data_dir):
    """--out-dir, or a new runs/doctor-<data folder name>-<time>/ (made once the checks are
    done, so a failed check leaves no empty folder)."""
    if out_dir:
        return Path(out_dir)
    return runs.new_run_dir(f"doctor-{data_dir.resolve().name}")


def _audit_labels(args, config):
    from catsdogs.training import audit

    if args.out:
        raise CatsDogsError("--out names the file checks' report", where="--out",
                            fix="the label audit's folder is --out-dir")
    if args.relabel and not args.fix_into:
        raise CatsDogsError("--relabel writes a copy", where="--relabel",
                            fix="add --fix-into DIR")
    if args.fix_into:
        check_copy_target(args.fix_into, args.data_dir)  # before the training, not after it
    print(f"Label audit in {config.folder}", flush=True)
    result = audit.audit_labels(config)
    print("\n".join(audit.summary_lines(result)))
    if args.fix_into:
        copied, suspects = audit.write_fixed_copy(result, args.data_dir, args.fix_into,
                                                    relabel=args.relabel)
        how = "in their suggested class folders" if args.relabel else "left out"
        print(f"Cleaned copy: {copied} files in {args.fix_into} ({suspects} suspects {how})")
        if held_out := audit.suspects_outside_training(result):
            log().warning(f"warning: {held_out} of them in the validation/test folder: a figure "
                          "measured on the copy's is chosen by these models' judgement and "
                          "reads high; check those photos by eye, or measure on the original")
    return 0


main = command_main(build_parser, _run, interrupted_hint="a --label-issues audit continues where "
                                                         "it stopped when run again with the "
                                                         "same flags")
