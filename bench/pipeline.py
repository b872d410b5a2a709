"""Images/s delivered to the model: ImageDataGenerator (the seed tutorial) vs catsdogs' tf.data.

    python bench/pipeline.py [--batches 40] [--repeats 3]

Both feed 150x150 batches of ../shared/data/cats_and_dogs/train with the seed tutorial's
augmentation (rescale 1/255, shear 0.2, zoom 0.2, horizontal flip), measured in this one
process, one after the other, after a warm-up batch. The model is left out: this is what the
input pipeline alone can deliver. catsdogs decodes every photo once before training; that
one-off cost is printed separately and also charged to its first epoch.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402,F401  (sets the Keras backend)
from machine import describe, shared_data  # noqa: E402

BATCH = 32  # the same for both


def time_batches(iterator, batches):
    next(iterator)  # warm-up: thread pools, graph tracing
    started = time.perf_counter()
    images = sum(len(next(iterator)[0]) for _ in range(batches))
    return images / (time.perf_counter() - started)


def imagedatagenerator_rate(folder, batches):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=1.0 / 255, shear_range=0.2, zoom_range=0.2,
                                   horizontal_flip=True)
    flow = generator.flow_from_directory(folder, target_size=(150, 150), batch_size=BATCH,
                                         class_mode="binary", seed=0)
    return time_batches(iter(flow), batches)


def catsdogs_rates(folder, batches):
    from catsdogs.data.augment import build_augmenter
    from catsdogs.data.datasets import Split, scan_class_folders
    from catsdogs.data.tf_pipeline import make_dataset
    from catsdogs.data.images import decode_many
    from catsdogs.models.presets import SEED_CATSDOGS_AUGMENT

    _, paths, labels, _ = scan_class_folders(folder)
    started = time.perf_counter()
    pixels, kept, _, _ = decode_many(paths, (150, 150), progress=False)
    decode_seconds = time.perf_counter() - started
    train = Split(pixels, labels[kept], [])
    dataset = make_dataset(train, BATCH, build_augmenter(SEED_CATSDOGS_AUGMENT, seed=0),
                           shuffle_seed=0).repeat()
    steady = time_batches(iter(dataset), batches)
    images = len(train)
    first_epoch = images / (decode_seconds + images / steady)
    return steady, first_epoch, decode_seconds, images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median is kept")
    args = parser.parse_args()
    folder = shared_data("cats_and_dogs", "train")
    print(describe())
    baseline = sorted(imagedatagenerator_rate(folder, args.batches) for _ in range(args.repeats))
    ours = sorted(catsdogs_rates(folder, args.batches * 4) for _ in range(args.repeats))
    base = baseline[len(baseline) // 2]
    steady, first_epoch, decode_seconds, images = ours[len(ours) // 2]
    print(f"ImageDataGenerator (seed tutorial)      {base:8.0f} images/s   1.00x")
    print(f"catsdogs tf.data, every epoch after 1st {steady:8.0f} images/s  {steady / base:5.2f}x")
    print(f"catsdogs tf.data, 1st epoch incl. decode{first_epoch:8.0f} images/s  {first_epoch / base:5.2f}x"
          f"   (decoding {images} photos once: {decode_seconds:.1f} s)")


if __name__ == "__main__":
    main()
