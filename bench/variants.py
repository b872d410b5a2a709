"""Screens: one run of air-cifar10's AdamW recipe (the preset before airbench's SGD recipe) with changes.

    python bench/variants.py --variant lookahead [--epochs 20] [--keep-run DIR]
    python bench/variants.py --variant none --widths 32-144-144   # other conv group widths
    python bench/variants.py --variant identity-init lookahead --epochs 16   # combined
    python bench/variants.py --variant airbench-net identity-init lookahead sgd   # airbench's all
    python bench/variants.py --variant airbench-net relu identity-init muon --widths 48-192-192 --epochs 12   # the preset

Variants (airbench's tricks and two levers; bench/history/cifar10-airbench-variants.md has
what each gave):
  none            air-cifar10 before airbench's recipe: AdamW + cosine, 20 epochs, conv groups 32-128-128
                  with BatchNorm-ReLU (the baseline to compare with)
  batch64         batches of 64 instead of 128 (an option too: --batch-size 64)
  identity-init   airbench's dirac initialisation: each 3x3 convolution after the whitening stem
                  starts as the identity on its first min(in, out) output channels
  lookahead       catsdogs' --lookahead (airbench's: every 5 steps the weights move to a running
                  average of themselves), with BatchNorm momentum 0.6 (it only helps with fast
                  BatchNorm statistics, per airbench)
  cutout          Keras' RandomErasing on half the images (patches of 10-14 px, filled with grey)
  bfloat16        Keras' mixed_bfloat16 policy
  airbench-net    airbench's layers: GELU, BatchNorm with a shift but no scale (momentum 0.6),
                  features (so logits) scaled by 1/9
  relu            with airbench-net: ReLU instead of GELU (GELU costs ~18 % of a step here);
                  with identity-init lookahead sgd --widths 48-192-192 --epochs 12: air-cifar10
                  with airbench94's SGD; with identity-init muon --widths 48-192-192 --epochs
                  12: air-cifar10 as it is now (airbench94_muon's Muon)
  sgd             airbench's optimizer as catsdogs options: --optimizer sgd (Nesterov 0.85,
                  64x rate for shift-only BatchNorm biases) --schedule triangular, batches of
                  1024, its rate and weight decay for the mean loss (1.5, 0.0089)
  alternate-flips catsdogs' --alternate-flips (airbench's derandomised flip: each image
                  mirrored in every other epoch)
  muon            airbench94_muon's optimizer as catsdogs options: --optimizer muon (Muon
                  for the convolutions, the sgd variant's SGD for the rest) --schedule linear,
                  batches of 2000, rate 1.65 and weight decay 0.0162 (its values converted
                  as for sgd); airbench94_muon has no lookahead: leave that variant out

The change is patched into this process only (a preset registered under a new name, a layer
added to the augmentation) or set as catsdogs options. Prints the
test accuracy per epoch, the wall time, and the best model's accuracy with `--tta` and
`--tta shift`, each charged the whole run and its own evaluation.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from catsdogs.data import augment  # noqa: E402
from catsdogs.models import presets as models  # noqa: E402
from machine import describe, shared_data  # noqa: E402
from train import train_and_evaluate  # noqa: E402

import keras  # noqa: E402

BASE = "air-cifar10-adamw"
BASE_WIDTHS = (32, 128, 128)
# The variants change air-cifar10 as it was before airbench's recipe (AdamW, cosine, 20 epochs,
# 32-128-128): with airbench94's SGD the preset was what `--variant airbench-net relu
# identity-init lookahead sgd --widths 48-192-192 --epochs 12` builds; with Muon (as it is now)
# `... identity-init muon ...`.
ADAMW_PRESET = dataclasses.replace(
    models.PRESETS["air-cifar10"], name=BASE, build_body=models.make_air_body(BASE_WIDTHS),
    adapt=models.whiten_patches,
    recipe=models.Recipe(epochs=20, batch_size=128, learning_rate=4e-3, schedule="cosine",
                         label_smoothing=0.2, weight_decay=0.2,
                         augment=models.CIFAR_PIXEL_SHIFT_AUGMENT))


def airbench_body(widths, activation="gelu"):
    """air-cifar10's network with airbench's layers: GELU (or ReLU, as the preset has it),
    shift-only BatchNorm, logits / 9."""
    layer = (keras.layers.ReLU if activation == "relu"
             else functools.partial(keras.layers.Activation, activation))
    return models.make_air_body(widths, stem_activation=layer, logit_scale=1 / 9,
                                norm=functools.partial(models.shift_norm, activation=layer))


def fast_batchnorm(model, momentum=0.6):
    """BatchNorm statistics that follow the weights faster (Keras' momentum 0.6, not 0.9)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


@contextlib.contextmanager
def variant_preset(variants, widths=None):
    """The name of a preset for `variants` (one or more, combined) and conv group `widths`,
    registered while the block runs."""
    preset = ADAMW_PRESET
    widths = widths or BASE_WIDTHS
    if "airbench-net" in variants:
        preset = dataclasses.replace(preset, build_body=airbench_body(
            widths, "relu" if "relu" in variants else "gelu"))
    elif widths != BASE_WIDTHS:
        preset = dataclasses.replace(preset, build_body=models.make_air_body(widths))
    restore = []
    then = [step for variant, step in (("identity-init", models.identity_init),
                                       ("lookahead", fast_batchnorm)) if variant in variants]

    def adapt(model, pixels):
        preset.adapt(model, pixels)
        for step in then:
            step(model)

    if "cutout" in variants:
        build = augment.build_augmenter
        augment.build_augmenter = lambda config, seed=None: keras.Sequential([
            *build(config, seed).layers,
            keras.layers.RandomErasing(factor=(0.5, 0.5), scale=(0.1, 0.2), fill_value=120.0,
                                       value_range=(0, 255), seed=seed)])
        restore.append(lambda: setattr(augment, "build_augmenter", build))
    if "bfloat16" in variants:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        restore.append(lambda: keras.mixed_precision.set_global_policy("float32"))
    name = ".".join([BASE, *variants, "-".join(map(str, widths))])
    models.PRESETS[name] = dataclasses.replace(preset, name=name, adapt=adapt)
    try:
        yield name
    finally:
        del models.PRESETS[name]
        for undo in restore:
            undo()


VARIANTS = ("none", "batch64", "identity-init", "lookahead", "cutout", "bfloat16", "airbench-net",
            "relu", "sgd", "alternate-flips", "muon")
# airbench94's optimizer (air-cifar10's before Muon) and airbench94_muon's (air-cifar10's now),
# converted to Keras' mean loss and decoupled weight decay (bench/history/cifar10-airbench-variants.md,
# "airbench's whole recipe" and "airbench94_muon's Muon"):
# - SGD: rate 11.5 per 1024 examples summed, over 1 + 1/0.15 for Nesterov momentum 0.85 -> 1.5;
#   decay 0.0153 per 1024 through that momentum -> 0.0153 / 0.15 / 11.5
# - Muon: rate 0.053 per example of 2000 summed, x 2000 / 64 for the biases' 64x -> 1.656 (1.65
#   here); decay 0.004 a step through momentum 0.85 -> 0.004 / 0.15 / 1.65
AIRBENCH_SGD = dict(optimizer="sgd", schedule="triangular", batch_size=1024, learning_rate=1.5,
                    weight_decay=0.00887)
AIRBENCH_MUON = dict(optimizer="muon", schedule="linear", batch_size=2000, learning_rate=1.65,
                     weight_decay=0.0162)


def settings(variants):
    """The catsdogs options the variants set."""
    chosen = {"batch_size": 64} if "batch64" in variants else {}
    if "lookahead" in variants:
        chosen["lookahead"] = True
    if "sgd" in variants:
        chosen.update(AIRBENCH_SGD)
    if "muon" in variants:
        chosen.update(AIRBENCH_MUON)
    if "alternate-flips" in variants:
        chosen["augment"] = dataclasses.replace(ADAMW_PRESET.recipe.augment, alternate_flips=True)
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", choices=VARIANTS, required=True,
                        help="one or more, combined")
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--widths", type=lambda text: tuple(map(int, text.split("-"))),
                        help="conv group widths, as 32-128-128 [default: the preset's]")
    parser.add_argument("--keep-run", metavar="DIR", help="keep the run folder here")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    root = shared_data("cifar10")
    print(describe())
    with tempfile.TemporaryDirectory() as folder, variant_preset(args.variant, args.widths) as preset:
        config = catsdogs.TrainConfig(
            preset=preset, data=str(root), dataset="cifar10", epochs=args.epochs,
            run_dir=args.keep_run or str(Path(folder) / "run"), **settings(args.variant))
        run, wall, tta = train_and_evaluate(config, root / "test")
    accuracies = [float(row["val_accuracy"]) for row in run.history]
    result = {"machine": describe(), "variant": args.variant, "widths": args.widths,
              "epochs": len(accuracies),
              "test_accuracy_per_epoch": accuracies, "wall_seconds": wall,
              "epoch_seconds": [float(row["seconds"]) for row in run.history], "tta": tta}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    widths = "-".join(map(str, args.widths)) if args.widths else "the preset's"
    print(f"\n{describe()}\n{BASE} + {' + '.join(args.variant)}, widths {widths}: "
          f"{len(accuracies)} epochs in {wall:.0f} s, "
          f"best {max(accuracies):.2%}; " + ", ".join(
              f"--tta {mode} {r['accuracy']:.2%} ({r['seconds']:.0f} s)" for mode, r in tta.items()))
    print("test accuracy per epoch: " + ", ".join(f"{a:.1%}" for a in accuracies))


if __name__ == "__main__":
    main()
