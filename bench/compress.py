"""Smaller and faster models on cats vs dogs: teacher, student from scratch, student
distilled, pruned teachers; each as the Keras float model and as int8 TFLite.

    python bench/compress.py                                        # trains every model
    python bench/compress.py --teacher runs/resnet-catsdogs-full    # reuses a finished teacher
    python bench/compress.py --teacher T --student S --distilled D --pruned P50 P25
    python bench/compress.py --teacher T --sweep runs/bench-scaling/*  # + bench/scaling.py's runs

Models not given are trained here, one after the other, into --out (runs/bench-compress):
the teacher (--teacher-preset, default resnet-catsdogs), the student preset from scratch and
distilled from the teacher (--student-preset, default fast-catsdogs; the same epochs), and the
teacher pruned to each --keep (default 0.5 and 0.25, fine-tuned as `catsdogs prune` does).
`--sweep` adds finished runs of bench/scaling.py (one preset at several `--width`s).
New runs choose their epoch on a 15 % selection split of the training images, so the
validation folder is a test split (see bench/train.py). Every model is exported (keras,
tflite-int8) and checked in its runtime on ../shared/data/cats_and_dogs/validation in this one
process: one table (accuracy, images/s, MB, each against the teacher's Keras model) and
bench/compress.png (accuracy against images/s and against file size, log axes).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from catsdogs import runs  # noqa: E402
from machine import describe, shared_data  # noqa: E402

FORMATS = ["keras", "tflite-int8"]
SELECTION = ["--selection-split", "0.15"]
PLOT = Path(__file__).resolve().parent / "compress.png"
ROWS = PLOT.with_suffix(".json")  # the table's numbers, for --replot


def run_command(name, argv):
    """Run `catsdogs <name> argv`; stop the benchmark if it fails."""
    from catsdogs import cli

    code = cli.run(name, argv)
    if code != 0:
        sys.exit(f"bench: catsdogs {name} {' '.join(argv)} failed (exit code {code})")


def preset_of(run_dir):
    return json.loads((Path(run_dir) / "config.json").read_text())["preset"]


def make_runs(args, data):
    """name -> run folder: the ones given, the others trained now."""
    out = Path(args.out)
    made = {}
    teacher = args.teacher or str(out / "teacher")
    if not args.teacher:
        run_command("train", ["--data", str(data), "--preset", args.teacher_preset, *SELECTION,
                              "--run-dir", teacher])
    made[f"teacher ({preset_of(teacher)})"] = teacher
    student_epochs = [] if args.student_epochs is None else ["--epochs", str(args.student_epochs)]
    student = args.student or str(out / "student")
    if not args.student:
        run_command("train", ["--data", str(data), "--preset", args.student_preset, *SELECTION,
                              *student_epochs, "--run-dir", student])
    made[f"student ({preset_of(student)}), from scratch"] = student
    distilled = args.distilled or str(out / "distilled")
    if not args.distilled:
        run_command("distill", [teacher, "--preset", args.student_preset, *student_epochs,
                                "--run-dir", distilled])
    made[f"student ({preset_of(distilled)}), distilled"] = distilled
    for i, keep in enumerate(args.keep):
        pruned = args.pruned[i] if i < len(args.pruned) else str(out / f"pruned-{keep:g}")
        if i >= len(args.pruned):
            run_command("prune", [teacher, "--keep", str(keep), "--run-dir", pruned])
        made[f"teacher pruned, keep {keep:g}"] = pruned
    for run_dir in args.sweep:
        width = json.loads((Path(run_dir) / "config.json").read_text()).get("width", 1.0)
        made[f"{preset_of(run_dir)} x{width:g} width"] = run_dir
    return made


def measure(made, validation):
    """Rows of (model, format, accuracy, images/s, bytes), from export + check."""
    from catsdogs.inference.export import check

    rows = []
    for name, run_dir in made.items():
        with tempfile.TemporaryDirectory() as folder:
            written = catsdogs.export(run_dir, FORMATS, out=folder)
            for result in check(written, validation):
                rows.append({"model": name, **result})
    return rows


def print_table(rows):
    base = rows[0]  # the teacher's Keras model
    print(f"{'model':<38}{'format':<13}{'accuracy':>9}{'vs':>8}{'images/s':>10}{'speed':>8}"
          f"{'MB':>8}{'size':>8}")
    for row in rows:
        print(f"{row['model']:<38}{row['format']:<13}{row['accuracy']:>9.1%}"
              f"{(row['accuracy'] - base['accuracy']) * 100:>+6.1f}pt"
              f"{row['images_per_second']:>10.0f}"
              f"{row['images_per_second'] / base['images_per_second']:>7.2f}x"
              f"{row['bytes'] / 1e6:>8.2f}{row['bytes'] / base['bytes']:>7.2f}x")


def plot(rows, path):
    """Accuracy against images/s and against file size, log axes, one marker per format."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from catsdogs.plots import save

    figure = Figure(figsize=(12, 6.5), layout="constrained")
    markers = {"keras": "o", "tflite-int8": "^"}
    models = list(dict.fromkeys(row["model"] for row in rows))
    colours = {model: f"C{i}" for i, model in enumerate(models)}
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis, key, scale, label in zip(figure.subplots(1, 2), ("images_per_second", "bytes"),
                                       (1, 1e-6), ("images/s, one process (log)", "file size, MB (log)")):
        for row in rows:
            axis.scatter(row[key] * scale, row["accuracy"] * 100, marker=markers[row["format"]],
                         color=colours[row["model"]], s=60)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy, % (validation folder, no choice made on it)")
        axis.grid(alpha=0.3, which="both")
    handles = [figure.axes[0].scatter([], [], color=colours[m], marker="s", s=60) for m in models]
    handles += [figure.axes[0].scatter([], [], color="black", marker=markers[f], s=60) for f in markers]
    figure.legend(handles, models + ["Keras float", "int8 TFLite"], loc="outside lower center",
                  ncol=4, fontsize=8, frameon=False)
    figure.suptitle("cats vs dogs: smaller models, accuracy against speed and size")
    save(figure, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a finished run on cats_and_dogs to use as teacher")
    parser.add_argument("--teacher-preset", default="resnet-catsdogs")
    parser.add_argument("--student-preset", default="fast-catsdogs")
    parser.add_argument("--student-epochs", type=int, help="default: the student preset's")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--student", help="reuse this run as the student from scratch")
    parser.add_argument("--distilled", help="reuse this run as the distilled student")
    parser.add_argument("--pruned", nargs="+", default=[], help="reuse these pruned runs, in "
                                                                 "--keep order")
    parser.add_argument("--sweep", nargs="+", default=[], help="finished bench/scaling.py runs "
                                                                "to add (one per width)")
    parser.add_argument("--out", default="runs/bench-compress", help="where new runs go")
    parser.add_argument("--replot", action="store_true",
                        help=f"draw the plot again from the last run's numbers ({ROWS.name})")
    args = parser.parse_args()
    if args.replot:
        rows = json.loads(ROWS.read_text())["rows"]
    else:
        data = shared_data("cats_and_dogs")
        machine = describe()
        print(machine)
        rows = measure(make_runs(args, data), data / "validation")
        runs.write_json(ROWS, {"machine": machine, "command": " ".join(sys.argv), "rows": rows})
    print_table(rows)
    plot(rows, PLOT)
    print(f"plot: {PLOT}")


if __name__ == "__main__":
    main()
