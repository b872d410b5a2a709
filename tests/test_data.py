"""Finding, decoding and splitting images; bad files are reported and skipped, never touched."""

import hashlib
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from PIL import Image

from catsdogs.data.datasets import load_image_data, stratified_split, scan_class_folders
from catsdogs.data.tf_pipeline import make_dataset
from catsdogs.config import TrainConfig
from catsdogs.errors import CatsDogsError
from catsdogs.data import images
from catsdogs.data.images import UnreadableImage, decode_image, decode_many

from conftest import TWO_CLASSES, bomb_png_bytes, write_class_images


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes are Linux-only")
def test_worker_processes_decode_exactly_what_threads_do(binary_folders, monkeypatch):
    """Many files go to forked worker processes (small JPEGs are GIL-bound in threads): same
    pixels, same order, same reasons for the bad files, across chunk boundaries."""
    cats = binary_folders / "train" / "cats"
    (cats / "truncated.jpg").write_bytes((cats / "cats_1.jpg").read_bytes()[:200])
    (cats / "notes.jpg").write_text("this is text, not a JPEG")
    paths = sorted(map(str, binary_folders.rglob("*.*")))
    monkeypatch.setattr(images, "CHUNK", 5)  # several chunks, bad files inside them
    with images._pool(2, processes=True) as pool:
        assert isinstance(pool, ProcessPoolExecutor)

    in_threads = decode_many(paths, (24, 24), workers=2, progress=False, processes_from=10**9)
    in_processes = decode_many(paths, (24, 24), workers=2, progress=False, processes_from=1)

    np.testing.assert_array_equal(in_processes[0], in_threads[0])
    np.testing.assert_array_equal(in_processes[1], in_threads[1])
    assert in_processes.skipped == in_threads.skipped
    assert in_processes.digests == in_threads.digests == [
        hashlib.sha256(open(paths[i], "rb").read()).hexdigest() for i in in_threads.kept]
    assert sorted(p.split("/")[-1] for p, _ in in_processes[2]) == ["notes.jpg", "truncated.jpg"]
    assert len(in_processes[1]) == len(paths) - 2


def test_decoding_holds_each_chunk_only_until_it_is_copied(tmp_path, monkeypatch):
    """The decoded array plus a few chunks at the peak, not twice the pixels: the in-memory
    cache's sizing (cache.RAM_FACTOR) counts on it."""
    import tracemalloc

    rng = np.random.default_rng(0)
    paths = []
    for index in range(240):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    monkeypatch.setattr(images, "CHUNK", 8)
    tracemalloc.start()
    try:
        decoded = decode_many(paths, (64, 64), workers=1, progress=False, processes_from=10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(decoded.kept) == 240
    assert peak < 1.4 * decoded.pixels.nbytes, (peak, decoded.pixels.nbytes)


def test_corrupt_and_fake_images_are_skipped_and_listed(binary_folders):
    cats = binary_folders / "train" / "cats"
    good = (cats / "cats_0.png").read_bytes()
    (cats / "truncated.jpg").write_bytes((cats / "cats_1.jpg").read_bytes()[:200])
    (cats / "notes.jpg").write_text("this is text, not a JPEG")
    (cats / "empty.png").write_bytes(b"")
    (cats / "readme.txt").write_text("not an image type")
    (cats / ".DS_Store").write_bytes(b"\0\1")
    before = digest(binary_folders)

    data = load_image_data(TrainConfig(data=str(binary_folders), keep_epoch="last"), (32, 32))

    reasons = {p.split("/")[-1]: r for p, r in data.skipped}
    assert set(reasons) == {"truncated.jpg", "notes.jpg", "empty.png", "readme.txt"}
    assert "corrupt" in reasons["truncated.jpg"] and "not an image" in reasons["notes.jpg"]
    assert reasons["empty.png"] == "empty file"
    assert data.train.counts(data.class_names) == {"cats": 12, "dogs": 12}
    assert digest(binary_folders) == before  # nothing moved, deleted or rewritten
    assert (cats / "cats_0.png").read_bytes() == good


def test_decode_applies_exif_orientation_and_makes_rgb(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    decoded = decode_image(tmp_path / "rotated.jpg", (40, 20))
    assert decoded.shape == (40, 20, 3) and decoded.dtype == np.uint8
    assert decoded[:15].mean() > 200 and decoded[25:].mean() < 50  # white half now on top

    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert abs(int(decode_image(tmp_path / "deep.png", (8, 8)).mean()) - 40000 // 257) <= 1
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert decode_image(tmp_path / "cmyk.jpg", (8, 8)).mean() > 250


def test_decode_rejects_garbage_with_a_reason(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(UnreadableImage):
        decode_image(tmp_path / "x.png", (8, 8))


def test_split_folder_is_stratified_and_seeded(three_class_folder):
    data = load_image_data(TrainConfig(data=str(three_class_folder), val_split=0.3, seed=5,
                                      keep_epoch="last"), (32, 32))
    assert data.class_names == ["apples", "grapes", "limes"]
    assert data.val.counts(data.class_names) == {"apples": 3, "grapes": 3, "limes": 3}
    assert not set(data.train.paths) & set(data.val.paths)
    again = load_image_data(TrainConfig(data=str(three_class_folder), val_split=0.3, seed=5,
                                      keep_epoch="last"), (32, 32))
    assert again.val.paths == data.val.paths


def test_stratified_split_refuses_a_class_too_small_to_split():
    with pytest.raises(CatsDogsError, match="class 'dogs' has too few images"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5, 0, ["cats", "dogs"])


def test_nested_folders_count_for_their_class(tmp_path):
    write_class_images(tmp_path / "d", TWO_CLASSES, 2)
    write_class_images(tmp_path / "d" / "cats" / "more", {"x": (0, 0, 0)}, 2)
    names, paths, labels, _ = scan_class_folders(tmp_path / "d")
    assert names == ["cats", "dogs"] and labels.tolist().count(0) == 4


def test_pipeline_batches_shuffles_and_augments_only_training(binary_folders):
    from catsdogs.data.augment import build_augmenter
    from catsdogs.config import AugmentConfig

    data = load_image_data(TrainConfig(data=str(binary_folders), keep_epoch="last"), (32, 32))
    plain = list(make_dataset(data.val, 5))
    assert [len(y) for _, y in plain] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), data.val.pixels)
    augmenter = build_augmenter(AugmentConfig(rotation_range=30), seed=1)
    epoch1 = np.concatenate([y for _, y in make_dataset(data.train, 8, augmenter, shuffle_seed=1)])
    assert sorted(epoch1.tolist()) == sorted(data.train.labels.tolist())
    x, _ = next(iter(make_dataset(data.train, 24, augmenter)))
    assert x.dtype.name == "float32" and 0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255
    assert not np.allclose(x.numpy(), data.train.pixels)  # augmented
    # no autotuning thread: dropping an epoch's iterator waited for it to wake (make_dataset)
    assert make_dataset(data.train, 8, augmenter).options().autotune.enabled is False


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png_bytes())  # 10^10 pixels claimed
    with pytest.raises(UnreadableImage, match="too large"):
        decode_image(tmp_path / "bomb.png", (8, 8))


def test_compiled_augmentation_draws_new_parameters_every_batch_and_epoch():
    """XLA compiles the augmentation inside tf.data; its random state must still advance."""
    from catsdogs.data.augment import build_augmenter
    from catsdogs.config import AugmentConfig
    from catsdogs.data.datasets import Split

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1, 24, 24, 3), dtype=np.uint8)
    split = Split(np.repeat(image, 8, axis=0), np.zeros(8, np.int32), [])
    augmenter = build_augmenter(AugmentConfig(rotation_range=40, zoom_range=0.3,
                                              horizontal_flip=True), seed=4)
    dataset = make_dataset(split, 4, augmenter)
    batches = [x.numpy() for _ in range(2) for x, _ in dataset]  # two epochs of two batches
    views = np.concatenate(batches).reshape(16, -1)
    distinct = {tuple(np.round(view[:50], 2)) for view in views}
    assert len(distinct) == 16
