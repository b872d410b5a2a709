"""Time-to-accuracy: the seed tutorial's script, as published, vs catsdogs presets.

    python bench/train.py --task catsdogs [--presets seed-catsdogs fast-catsdogs long-catsdogs hires-catsdogs resnet-catsdogs]
    python bench/train.py --task cifar10  [--presets seed-cifar10 fast-cifar10 resnet-cifar10 air-cifar10]

All runs happen in this one command, one after the other, on ../shared/data. The baseline is
the tutorial itself: for cats/dogs, ImageDataGenerator (rescale, shear 0.2, zoom 0.2, flip,
batches of 20) feeding the seed CNN for 30 epochs; for CIFAR-10, the seed CNN fit on arrays
for 10 epochs. Every catsdogs run is charged its whole wall time: decoding the images once,
every epoch, and writing the run folder (all charged to its first epoch).
Prints, per run: best validation/test accuracy, wall time to reach the tutorial's best
accuracy, best accuracy within the tutorial's time and within 20 minutes; for catsdogs runs
also the best model's accuracy with test-time augmentation, flips (`evaluate --tta`) and flips
with 1-px shifts (`evaluate --tta shift`), each with the total time including that evaluation.

The protocol that cannot flatter (the default, `--selection-split 0.15`): catsdogs runs choose
their best epoch on 15 % of each class's training images (seeded, stratified), so the data's
own validation split (cats/dogs) or test split (CIFAR-10) is a test split no choice was made
on: a second table prints, per preset, the selection-split accuracy, the test accuracy (once,
of the chosen model; TTA columns are the same model), the time, and the achieved training
GFLOP/s (FLOPs per image at full size x 3 for the backward pass x images trained / training
seconds; progressive resizing trains on fewer pixels than that counts). `--selection-split 0`
is the old protocol (the validation split picks the epoch and is reported).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from catsdogs.inference.tta import TTA_MODES  # noqa: E402
from machine import describe, shared_data, training_gflops_per_second  # noqa: E402

TASKS = {
    "catsdogs": {"data": ("cats_and_dogs",),
                 "presets": ["seed-catsdogs", "fast-catsdogs", "long-catsdogs", "hires-catsdogs",
                             "resnet-catsdogs"]},
    "cifar10": {"data": ("cifar10",),
                "presets": ["seed-cifar10", "fast-cifar10", "resnet-cifar10", "air-cifar10"]},
}
BUDGET_SECONDS = 20 * 60
VAL_SPLIT = {"catsdogs": "validation", "cifar10": "test"}  # the folder training validates on


def _clock():
    import keras

    class EpochClock(keras.callbacks.Callback):
        """(seconds since fit began, val accuracy) at the end of every epoch."""

        def on_train_begin(self, logs=None):
            self.started, self.points = time.perf_counter(), []

        def on_epoch_end(self, epoch, logs=None):
            self.points.append((time.perf_counter() - self.started, float(logs["val_accuracy"])))

    return EpochClock()


def seed_layers(input_shape, conv_widths, dense_width, outputs, activation):
    import keras
    from keras import layers

    stack = [keras.Input(input_shape)]
    for width in conv_widths:
        stack += [layers.Conv2D(width, 3, activation="relu"), layers.MaxPooling2D(2)]
    stack += [layers.Flatten(), layers.Dense(dense_width, activation="relu"),
              layers.Dense(outputs, activation=activation)]
    return keras.Sequential(stack)


def tutorial_catsdogs(root, epochs=30):
    """The cats/dogs tutorial as published: ImageDataGenerator + the seed CNN + Adam."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    train = ImageDataGenerator(rescale=1.0 / 255, shear_range=0.2, zoom_range=0.2,
                               horizontal_flip=True).flow_from_directory(
        root / "train", target_size=(150, 150), batch_size=20, class_mode="binary")
    val = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        root / "validation", target_size=(150, 150), batch_size=20, class_mode="binary")
    model = seed_layers((150, 150, 3), (32, 64, 128, 128), 512, 1, "sigmoid")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    clock = _clock()
    model.fit(train, epochs=epochs, validation_data=val, callbacks=[clock], verbose=2)
    return clock.points


def tutorial_cifar10(root, epochs=10):
    """The CIFAR-10 tutorial as published: arrays scaled to 0..1, the seed CNN, Adam, batch 32."""
    from catsdogs.data.datasets import load_folders

    data = load_folders(root / "train", root / "test", (32, 32))  # arrays, as the tutorial loads
    model = seed_layers((32, 32, 3), (32, 64, 128), 128, 10, "softmax")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = _clock()
    model.fit(data.train.pixels / 255.0, data.train.labels, epochs=epochs,
              validation_data=(data.val.pixels / 255.0, data.val.labels), callbacks=[clock], verbose=2)
    return clock.points


def train_and_evaluate(config, eval_dir):
    """Train `config`; then evaluate the best model on `eval_dir` with each test-time
    augmentation. Returns the run, its wall seconds, and {mode: {"accuracy", "seconds"}} where
    seconds charge the whole run and that evaluation."""
    started = time.perf_counter()
    run = catsdogs.train(config)
    wall = time.perf_counter() - started
    tta = {}
    for mode in TTA_MODES:
        evaluation_started = time.perf_counter()
        accuracy = catsdogs.evaluate(run.model_path, eval_dir, tta=mode)["accuracy"]
        tta[mode] = {"accuracy": accuracy, "seconds": wall + time.perf_counter() - evaluation_started}
    return run, wall, tta


def catsdogs_run(task, root, preset, keep_runs=None, selection_split=0.0):
    """One catsdogs training run: (cumulative seconds, val accuracy) per epoch, setup included,
    and {tta mode: {"accuracy", "seconds"}} of its best model evaluated afterwards with each
    test-time augmentation (`python -m catsdogs.evaluate RUN DATA --tta MODE`), each charged the
    whole run's time and its own evaluation.
    The run folder goes into `keep_runs` (as <task>-<preset>) if given, else a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        parent = Path(keep_runs) if keep_runs else Path(folder)
        config = catsdogs.TrainConfig(preset=preset, data=str(root),
                                      dataset="cifar10" if task == "cifar10" else "folder",
                                      run_dir=str(parent / f"{task}-{preset}"),
                                      selection_split=selection_split)
        run, wall, tta = train_and_evaluate(config, root / VAL_SPLIT[task])
    seconds = np.cumsum([float(r["seconds"]) for r in run.history])
    overhead = wall - seconds[-1]  # decoding before fit, saving after: charged to epoch 1
    points = [(s + overhead, float(r["val_accuracy"])) for s, r in zip(seconds, run.history)]
    return points, tta, protocol_row(preset, run, wall)


def protocol_row(preset, run, wall):
    """Selection-split and test accuracy, time and achieved training GFLOP/s of one run."""
    from catsdogs.models.presets import count_flops, get_preset

    model_preset = get_preset(preset)
    flops = count_flops(model_preset.build(len(run.class_names)))
    return {"preset": preset, "epochs": run.metrics["epochs_run"],
            "selection": run.metrics["best_val_accuracy"],
            "final_selection": run.metrics["final_val_accuracy"],
            "test": run.metrics.get("test_accuracy"), "seconds": wall,
            "gflops_per_second": training_gflops_per_second(flops, run.metrics, run.history,
                                                            model_preset.image_size[0])}


def summarize(name, points, target, tutorial_seconds, tta=None):
    """One table row; `tta` is train_and_evaluate's, if measured."""
    best = max(acc for _, acc in points)
    reach = next((s for s, acc in points if acc >= target), None)
    within = lambda budget: max((acc for s, acc in points if s <= budget), default=float("nan"))
    return {"run": name, "epochs": len(points), "best": best, "total_seconds": points[-1][0],
            "seconds_to_target": reach, "best_within_tutorial_time": within(tutorial_seconds),
            "best_within_20_min": within(BUDGET_SECONDS),
            **{f"{mode}_tta": tta[mode] if tta else None for mode in TTA_MODES}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--presets", nargs="+", help="catsdogs presets to run [default: all three]")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep-runs", metavar="DIR",
                        help="keep each catsdogs run folder (history.csv, model) in DIR")
    parser.add_argument("--selection-split", type=float, default=0.15,
                        help="share of the training images that chooses the epoch; 0: the "
                             "validation split chooses and is reported (the old protocol)")
    args = parser.parse_args()
    root = shared_data(*TASKS[args.task]["data"])
    print(describe())
    tutorial = (tutorial_catsdogs if args.task == "catsdogs" else tutorial_cifar10)(root)
    target = max(acc for _, acc in tutorial)
    rows = [summarize("tutorial (as published)", tutorial, target, tutorial[-1][0])]
    protocol = []
    for preset in args.presets or TASKS[args.task]["presets"]:
        points, tta, row = catsdogs_run(args.task, root, preset, args.keep_runs,
                                        args.selection_split)
        rows.append(summarize(f"catsdogs {preset}", points, target, tutorial[-1][0], tta))
        protocol.append({**row, **{f"test_{mode}_tta": tta[mode]["accuracy"] for mode in TTA_MODES}})
    if args.json:  # first, so that nothing below can lose the measurements
        Path(args.json).write_text(json.dumps({"machine": describe(), "rows": rows,
                                               "protocol": protocol}, indent=2))
    base = rows[0]
    print(f"\n{describe()}\ntarget: the tutorial's best accuracy, {target:.1%}")
    print(f"{'run':<28}{'epochs':>7}{'best':>8}{'total s':>9}{'s to target':>12}{'speed-up':>9}"
          f"{'best in tut. time':>18}{'best in 20 min':>15}"
          + "".join(f"{f'+{mode} TTA (total s)':>22}" for mode in TTA_MODES))
    for row in rows:
        reach = row["seconds_to_target"]
        speedup = f"{base['seconds_to_target'] / reach:.2f}x" if reach else "-"
        reached = "not reached" if reach is None else f"{reach:.0f}"
        print(f"{row['run']:<28}{row['epochs']:>7}{row['best']:>8.1%}{row['total_seconds']:>9.0f}"
              f"{reached:>12}{speedup:>9}"
              f"{row['best_within_tutorial_time']:>18.1%}{row['best_within_20_min']:>15.1%}"
              + "".join(f"{tta['accuracy']:>14.1%} ({tta['seconds']:.0f})"
                        for tta in (row[f"{mode}_tta"] for mode in TTA_MODES) if tta))
    if args.selection_split:
        print(f"\nprotocol: epochs chosen on {args.selection_split:.0%} of the training images; "
              f"'test' is {VAL_SPLIT[args.task]}/, on which nothing was chosen")
        print_protocol_table(protocol)


def print_protocol_table(rows, first="preset"):
    """The protocol's table: per row (named by its `first` key), the epochs run, the chosen
    epoch's and the last epoch's selection-split accuracy, the test accuracy plain and with
    each test-time augmentation, the seconds and the achieved training GFLOP/s."""
    print(f"{first:<26}{'epochs':>7}{'selection best':>15}{'final':>8}{'test':>8}"
          + "".join(f"{'test +' + mode:>13}" for mode in TTA_MODES)
          + f"{'seconds':>9}{'GFLOP/s':>9}")
    for row in rows:
        print(f"{row[first]:<26}{row['epochs']:>7}{row['selection']:>15.1%}"
              f"{row['final_selection']:>8.1%}{row['test']:>8.1%}"
              + "".join(f"{row[f'test_{mode}_tta']:>13.1%}" for mode in TTA_MODES)
              + f"{row['seconds']:>9.0f}{row['gflops_per_second']:>9.1f}")


if __name__ == "__main__":
    main()
