"""The disk cache of decoded pixels: each file decoded once, only changes decoded again, a
damaged cache rebuilt, concurrent fillers safe, a full disk one line, and training from it
the same as training from memory."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import config as cfg
from catsdogs.config import TrainConfig
from catsdogs.data import cache, streamed
from catsdogs.data.datasets import load_image_data
from catsdogs.data.tf_pipeline import make_dataset

from conftest import REPO, TWO_CLASSES, write_class_images

SIZE = (32, 32)
pytestmark = pytest.mark.usefixtures("calibration_at_test_scale")


@pytest.fixture
def folder(tmp_path):
    """One folder of two classes (8 images each) and a cache root of its own."""
    return write_class_images(tmp_path / "photos", TWO_CLASSES, 8, size=SIZE, seed=3)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def decoded(monkeypatch):
    """The paths each call of the cache's decoder decoded, call by call."""
    calls, original = [], cache.decode_many

    def counting(paths, *args, **kwargs):
        calls.append(list(paths))
        return original(paths, *args, **kwargs)

    monkeypatch.setattr(cache, "decode_many", counting)
    return calls


def load(folder, cache_dir, mode="disk", **settings):
    return load_image_data(TrainConfig(data=str(folder), cache=mode, cache_dir=str(cache_dir),
                                       **settings), SIZE)


def all_files(folder):
    return sorted(str(p) for p in folder.rglob("*.*"))


def the_cache(cache_dir):
    folders = [p for p in cache_dir.iterdir()]
    assert len(folders) == 1, folders
    return folders[0]


def assert_same_images(disk, ram):
    for name in ("train", "val", "calibration"):
        a, b = getattr(disk, name), getattr(ram, name)
        assert a.paths == b.paths and a.digests == b.digests
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_a_second_run_decodes_nothing_and_says_so(folder, cache_dir, decoded, capsys):
    first = load(folder, cache_dir)
    assert sorted(p for call in decoded for p in call) == all_files(folder)
    assert f"Decoding 16 images from {folder} into the cache" in capsys.readouterr().err
    decoded.clear()
    second = load(folder, cache_dir)
    assert decoded == []
    said = capsys.readouterr().err
    assert f"Reading 16 images from {folder} out of the cache" in said and "Decoding" not in said
    assert_same_images(second, first)
    assert_same_images(second, load(folder, cache_dir, mode="ram"))
    assert second.summary()["pixels"] == {"mode": "disk", "folders": [str(the_cache(cache_dir))]}


def test_disk_backed_splits_keep_rows_not_pixels(folder, cache_dir):
    """Carving the validation and calibration splits reads nothing into memory."""
    data = load(folder, cache_dir)
    assert data.train.on_disk and data.val.on_disk and data.calibration.on_disk
    assert data.train.store is data.val.store  # one file, three index arrays
    rows = np.concatenate([data.train.rows, data.val.rows, data.calibration.rows])
    assert sorted(rows.tolist()) == list(range(16))
    np.testing.assert_array_equal(data.train.subset([2, 0]).pixels, data.train.pixels[[2, 0]])


def test_only_a_changed_or_added_file_is_decoded_again_and_a_removed_one_drops_out(
        folder, cache_dir, decoded, capsys):
    load(folder, cache_dir)
    changed, removed = folder / "cats" / "cats_0.png", folder / "dogs" / "dogs_1.jpg"
    Image.fromarray(np.full((*SIZE, 3), 7, np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, surely
    added = folder / "dogs" / "dogs_new.png"
    Image.fromarray(np.full((*SIZE, 3), 99, np.uint8)).save(added)
    removed.unlink()
    decoded.clear()
    capsys.readouterr()
    data = load(folder, cache_dir)
    assert sorted(p for call in decoded for p in call) == sorted([str(changed), str(added)])
    assert (f"Reading 16 images from {folder} out of the cache {the_cache(cache_dir)}; "
            "decoding 2 new or changed ones into it") in capsys.readouterr().err
    assert_same_images(data, load(folder, cache_dir, mode="ram"))
    manifest = json.loads((the_cache(cache_dir) / cache.MANIFEST).read_text())
    assert str(removed) not in manifest["files"] and len(manifest["files"]) == 16
    assert len(list(the_cache(cache_dir).glob("pixels-*.npy"))) == 1  # the old file is gone


def test_a_truncated_cache_file_is_rebuilt_not_trained_on(folder, cache_dir, decoded, capsys):
    load(folder, cache_dir)
    pixels_file, = the_cache(cache_dir).glob("pixels-*.npy")
    with open(pixels_file, "r+b") as handle:
        handle.truncate(pixels_file.stat().st_size - 100)
    decoded.clear()
    data = load(folder, cache_dir)
    assert "damaged" in capsys.readouterr().err
    assert sorted(p for call in decoded for p in call) == all_files(folder)
    assert_same_images(data, load(folder, cache_dir, mode="ram"))


def test_a_cache_whose_manifest_disagrees_with_its_file_is_rebuilt(folder, cache_dir, decoded):
    load(folder, cache_dir)
    manifest_file = the_cache(cache_dir) / cache.MANIFEST
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "rows": manifest["rows"] + 1}))
    decoded.clear()
    load(folder, cache_dir)
    assert len([p for call in decoded for p in call]) == 16


FILL = """
import sys
sys.path.insert(0, {repo!r})
from catsdogs.config import TrainConfig
from catsdogs.data.datasets import load_image_data
data = load_image_data(TrainConfig(data={folder!r}, cache="disk", cache_dir={cache!r}), (32, 32))
print(len(data.train) + len(data.val) + len(data.calibration or ()))
"""


def test_two_processes_filling_one_cache_end_with_one_good_cache(folder, cache_dir, decoded):
    script = FILL.format(repo=str(REPO), folder=str(folder), cache=str(cache_dir))
    fillers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [filler.communicate(timeout=120) for filler in fillers]
    assert [filler.returncode for filler in fillers] == [0, 0], results
    assert [out.strip() for out, _ in results] == ["16", "16"]
    # one decoded the files, the other waited for it and decoded nothing
    assert sum("into the cache" in err for _, err in results) == 1, results
    folder_files = sorted(p.name for p in the_cache(cache_dir).iterdir())
    assert len(folder_files) == 3 and folder_files[:2] == [cache.LOCK, cache.MANIFEST]
    data = load(folder, cache_dir)
    assert decoded == []
    assert_same_images(data, load(folder, cache_dir, mode="ram"))


KILLED_MID_FILL = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from catsdogs.config import TrainConfig
from catsdogs.data import cache
from catsdogs.data.datasets import load_image_data
cache.BATCH_BYTES = 4 * 32 * 32 * 3  # four images a batch: the fill takes several
original, calls = cache.decode_many, []
def decode_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # two batches written, the third being decoded
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
cache.decode_many = decode_then_die
load_image_data(TrainConfig(data={folder!r}, cache="disk", cache_dir={cache!r}), (32, 32))
"""


def test_a_kill_while_caching_leaves_a_cache_the_next_run_accepts_or_rebuilds(folder,
                                                                               cache_dir):
    script = KILLED_MID_FILL.format(repo=str(REPO), folder=str(folder), cache=str(cache_dir))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    data = load(folder, cache_dir)  # no error: what was left is used or decoded again
    assert_same_images(data, load(folder, cache_dir, mode="ram"))
    assert sorted(p.name for p in the_cache(cache_dir).iterdir())[:2] == [cache.LOCK,
                                                                          cache.MANIFEST]
    assert len(list(the_cache(cache_dir).iterdir())) == 3  # no partial file left beside


def test_a_full_disk_while_caching_is_one_line_and_leaves_no_partial_file(
        folder, cache_dir, monkeypatch, capsys):
    from catsdogs.commands.train import main

    def full(out, pixels):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "_write", full)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    code = main(["--data", str(folder), "--preset", "seed-cifar10", "--epochs", "1",
                 "--cache", "disk", "--cache-dir", str(cache_dir),
                 "--run-dir", str(folder.parent / "run")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, errors
    assert "disk full while caching" in errors[0] and str(the_cache(cache_dir)) in errors[0]
    assert [p.name for p in the_cache(cache_dir).iterdir()] == [cache.LOCK]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # photos untouched


def test_auto_picks_disk_when_memory_is_short_and_says_why(folder, cache_dir, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(cache, "available_memory", lambda: 10_000)
    data = load(folder, cache_dir, mode="auto")
    assert data.train.on_disk and data.storage["mode"] == "disk"
    line, = [l for l in capsys.readouterr().err.splitlines() if l.startswith("Cache:")]
    assert "disk" in line and "--cache auto" in line and "available" in line
    monkeypatch.setattr(cache, "available_memory", lambda: 10**12)
    data = load(folder, cache_dir, mode="auto")
    assert not data.train.on_disk and data.storage == {"mode": "ram"}


def test_training_from_disk_or_from_files_gives_the_same_first_batch_as_from_memory(
        folder, cache_dir):
    from catsdogs.training import train

    batches = {}
    for mode in ("ram", "disk", "none"):
        config = train.resolve_config(TrainConfig(
            data=str(folder), preset="seed-cifar10", cache=mode, cache_dir=str(cache_dir),
            # flips only: they are drawn by image index (AlternatingFlips), where a random
            # warp in a parallel map may give its draws to the batches in either order
            batch_size=8, seed=5, augment={"horizontal_flip": True, "alternate_flips": True}))
        prepared = train._prepare(config, train._placement(config))
        assert prepared.data.train.on_disk == (mode != "ram")
        batches[mode] = prepared.first_batch
    for mode in ("disk", "none"):
        for ram_part, other_part in zip(batches["ram"], batches[mode]):
            np.testing.assert_array_equal(ram_part, other_part)


def test_disk_pipeline_gathers_every_image_once_per_epoch(folder, cache_dir):
    data = load(folder, cache_dir)
    epoch = np.concatenate([x.numpy() for x, _ in make_dataset(data.train, 5, shuffle_seed=2)])
    assert len(epoch) == len(data.train)
    flat = lambda images: sorted(map(bytes, images.astype(np.uint8)))  # noqa: E731
    assert flat(epoch) == flat(data.train.pixels)


def test_none_decodes_every_epoch_in_the_pipeline_and_keeps_nothing(folder, cache_dir,
                                                                    monkeypatch):
    decoded, original = [], streamed.decode_image

    def counting(path, size):
        decoded.append(path)
        return original(path, size)

    monkeypatch.setattr(streamed, "decode_image", counting)
    data = load(folder, cache_dir, mode="none")
    assert data.train.on_disk and data.storage == {"mode": "none"}
    assert decoded == [] and not cache_dir.exists()  # checked at load, nothing decoded or kept
    ram = load(folder, cache_dir, mode="ram")
    assert data.train.paths == ram.train.paths and data.train.digests == ram.train.digests
    flat = lambda images: sorted(map(bytes, images.astype(np.uint8)))  # noqa: E731
    dataset = make_dataset(data.train, 5, shuffle_seed=2)
    for _ in range(2):  # each epoch decodes every training file once, and only those
        decoded.clear()
        epoch = np.concatenate([x.numpy() for x, _ in dataset])
        assert sorted(decoded) == sorted(data.train.paths)
        assert flat(epoch) == flat(ram.train.pixels)


def train_and_spoil(folder, monkeypatch, capsys, cache, spoil):
    """Train seed-cifar10 for 2 epochs with `--cache cache`, calling `spoil(data, epoch)` (the
    loaded ImageData) as each epoch begins; (exit code, the error lines, the data)."""
    from catsdogs.commands.train import main
    from catsdogs.data import datasets
    from catsdogs.training import callbacks

    loaded, load_original = [], datasets.load_image_data
    monkeypatch.setattr(datasets, "load_image_data",
                        lambda *args: loaded.append(load_original(*args)) or loaded[-1])
    begin_original = callbacks.HistoryCSV.on_epoch_begin

    def spoil_then_begin(self, epoch, logs=None):
        spoil(loaded[0], epoch)
        begin_original(self, epoch, logs)

    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_begin", spoil_then_begin)
    code = main(["--data", str(folder), "--preset", "seed-cifar10", "--epochs", "2",
                 "--batch-size", "4", "--cache", cache, "--run-dir", str(folder.parent / "run")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    return code, errors, loaded[0]


def test_none_a_photo_deleted_during_training_is_one_line_naming_it(folder, cache_dir,
                                                                    monkeypatch, capsys):
    """A photo that goes after the data is loaded stops the run in an epoch with the line the
    decoder raised, not TensorFlow's error that carried it out of the pipeline."""
    code, errors, data = train_and_spoil(
        folder, monkeypatch, capsys, "none",
        lambda data, epoch: Path(data.train.paths[0]).unlink(missing_ok=True))
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("error: a photo changed or went during the run")
    assert f"({data.train.paths[0]})" in errors[0] and "--cache disk" in errors[0]


def test_disk_a_cache_file_cut_short_during_training_is_one_line_naming_it(folder, cache_dir,
                                                                         monkeypatch, capsys):
    """Another program truncating the pixels file in place mid-run: one line naming the file
    and what to do, not TensorFlow's error that carried it out of the pipeline."""
    def cut_short(data, epoch):
        if epoch == 1:
            os.truncate(data.train.store.path, 200)

    code, errors, data = train_and_spoil(folder, monkeypatch, capsys, "disk", cut_short)
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("error: the disk cache's pixels file was cut short during the run")
    assert str(data.train.store.path) in errors[0] and "--cache ram" in errors[0]


def test_none_a_photo_rewritten_after_loading_fails_the_first_batch_as_raised(folder, cache_dir,
                                                                              monkeypatch):
    from catsdogs.data import datasets
    from catsdogs.errors import RunFailed
    from catsdogs.training import train

    rewritten, load_original = [], datasets.load_image_data

    def load_then_rewrite(*args):
        data = load_original(*args)
        rewritten.append(data.train.paths[0])
        Path(rewritten[0]).write_bytes(b"no longer an image")
        return data

    monkeypatch.setattr(datasets, "load_image_data", load_then_rewrite)
    config = train.resolve_config(TrainConfig(data=str(folder), preset="seed-cifar10",
                                              cache="none", batch_size=64))
    with pytest.raises(RunFailed, match="changed or went during the run") as raised:
        train._prepare(config, train._placement(config))
    assert raised.value.where == rewritten[0]


def test_none_leaves_out_the_files_ram_leaves_out_with_the_same_reasons(folder, cache_dir):
    (folder / "cats" / "empty.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    whole = folder / "dogs" / "whole.jpg"
    Image.fromarray(noise).save(whole, quality=95)
    (folder / "dogs" / "truncated.jpg").write_bytes(whole.read_bytes()[:3000])
    ram, none = load(folder, cache_dir, mode="ram"), load(folder, cache_dir, mode="none")
    assert sorted(none.skipped) == sorted(ram.skipped)
    assert {Path(path).name for path, _ in none.skipped} == {"empty.jpg", "truncated.jpg"}


@pytest.mark.parametrize("mode, layout", [("disk", "train/ and validation/"),
                                          ("none", "train/ and validation/"),
                                          ("disk", "one folder")])
def test_a_refits_union_reads_no_pixels_until_its_batches_do(mode, layout, folder, cache_dir,
                                                             monkeypatch, tmp_path):
    """--refit's training photos (its parent's training and choosing photos joined) stay rows
    in their stores: two folders' stores are read as one, not read into memory; its batches
    are those of the same join in memory."""
    from catsdogs.data.datasets import JoinedStore

    if layout != "one folder":
        folder = tmp_path / "split"
        write_class_images(folder / "train", TWO_CLASSES, 6, size=SIZE, seed=1)
        write_class_images(folder / "validation", TWO_CLASSES, 4, size=SIZE, seed=2)
    load(folder, cache_dir, mode)  # fills the cache: its decoding and copying are not the test's
    reads = []
    for store in (cache.DiskArray, streamed.DecodeOnRead):
        monkeypatch.setattr(store, "read", lambda self, rows, read=store.read:
                            reads.append(len(rows)) or read(self, rows))
    refit = load(folder, cache_dir, mode, refit_union=True)
    assert reads == [] and refit.train.on_disk
    assert isinstance(refit.train.store, JoinedStore) == (layout != "one folder")
    ram = load(folder, cache_dir, "ram", refit_union=True)
    assert refit.train.paths == ram.train.paths
    assert len(refit.train) == len(all_files(folder)) - len(ram.val)
    np.testing.assert_array_equal(refit.train.labels, ram.train.labels)
    batches = [list(make_dataset(data.train, 5)) for data in (refit, ram)]
    assert reads and max(reads) <= 5  # a batch at a time
    for (x, y), (ram_x, ram_y) in zip(*batches, strict=True):
        np.testing.assert_array_equal(x, ram_x)
        np.testing.assert_array_equal(y, ram_y)


def test_an_old_config_json_is_upgraded_to_pixels_in_memory():
    assert cfg.upgrade({})["cache"] == "ram"
    assert TrainConfig().cache == "auto"


def test_cache_list_and_clear(folder, cache_dir, capsys):
    from catsdogs.commands.cache import main

    load(folder, cache_dir)
    stranger = cache_dir / "not-a-cache"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    project = cache_dir / "a-project"  # a user's folder with a manifest of its own
    project.mkdir()
    (project / "manifest.json").write_text('{"format": 2, "source": "x", "image_size": [1, 1]}')
    (project / "main.py").write_text("mine")
    assert main(["list", "--cache-dir", str(cache_dir)]) == 0
    listing = capsys.readouterr().out
    assert str(folder) in listing and "32x32" in listing and "16 images" in listing
    assert main(["clear", "--older-than", "1", "--cache-dir", str(cache_dir)]) == 0
    assert "Removed 0 cache(s)" in capsys.readouterr().out  # used a moment ago
    assert main(["clear", "--cache-dir", str(cache_dir)]) == 0
    assert "Removed 1 cache(s)" in capsys.readouterr().out
    assert sorted(p.name for p in cache_dir.iterdir()) == ["a-project", "not-a-cache"]  # others'
    assert (project / "main.py").read_text() == "mine"
    assert all_files(folder)  # photos untouched


# ---------------------------------------------------------------- every command that decodes


def brightness_classifier():
    """A stand-in model (P(dogs) = mean pixel / 255) at 8x8: no Keras, so the tests are quick."""
    from catsdogs.inference.classifier import Classifier

    return Classifier(lambda x: x.mean(axis=(1, 2, 3))[:, None] / 255.0, ["cats", "dogs"],
                      (8, 8), source=None)


def test_evaluate_reads_through_the_cache_and_a_second_evaluation_decodes_nothing(
        folder, cache_dir, decoded, tmp_path):
    from catsdogs.inference.evaluate import evaluate

    def report(mode):
        metrics = evaluate(brightness_classifier(), folder, out=tmp_path / mode,
                           cache=cache.CacheConfig(mode, str(cache_dir)))
        return {key: metrics[key] for key in ("images", "loss", "confusion_matrix", "worst")}

    ram = report("ram")
    assert report("disk") == ram and sum(map(len, decoded)) == 16
    decoded.clear()
    assert report("disk") == ram and decoded == []
    assert (tmp_path / "disk" / "plots" / "most_wrong.png").is_file()  # read by rows too


def test_calibrate_reads_through_the_cache_it_is_given_or_the_runs_own(folder, cache_dir, decoded,
                                                                      tmp_path):
    from catsdogs.commands.calibrate import build_parser
    from catsdogs.inference.calibrate import held_out_split

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg.run_config_dict(TrainConfig(
        data=str(folder), preset="seed-cifar10", cache="ram", cache_dir=str(cache_dir)))))
    given = {"cache": "disk", "cache_dir": str(cache_dir)}
    # the run's photos set aside (its own settings: ram), then a folder given: the same
    # photos, so the cache the first filled serves the second
    for data_dir, decodes in ((None, 16), (folder, 0)):
        pixels, labels, _ = held_out_split(run_dir, brightness_classifier(), data_dir)
        decoded.clear()
        from_disk, disk_labels, _ = held_out_split(run_dir, brightness_classifier(), data_dir,
                                                   given)
        assert sum(map(len, decoded)) == decodes
        assert not isinstance(from_disk, np.ndarray)  # read a batch at a time
        np.testing.assert_array_equal(from_disk[0:len(from_disk)], pixels)
        np.testing.assert_array_equal(disk_labels, labels)
    args = build_parser().parse_args([str(run_dir), "--cache", "disk", "--cache-dir", "x"])
    assert cfg.given_flags(args, cache.CacheConfig) == {"cache": "disk", "cache_dir": "x"}


@pytest.mark.parametrize("command", ["train --folds", "doctor --label-issues"])
def test_the_folds_share_one_cache_filled_once(command, folder, cache_dir, decoded, monkeypatch,
                                               tmp_path):
    """Each fold loads its data as training does (its tree of links to the photos, read
    through the photos' cache) and decodes nothing; the training itself is left out."""
    from catsdogs.commands import doctor
    from catsdogs.commands import train as train_command
    from catsdogs.training import kfold, train

    loads = []

    def load_instead_of_training(config, **kwargs):
        before = sum(map(len, decoded))
        data = load_image_data(config, SIZE)
        # the fold's images and the photos its links point to (the links go with the fold)
        loads.append(([(split.pixels, [os.path.realpath(p) for p in split.paths])
                       for split in (data.train, data.val, data.test)],
                      data.summary()["pixels"], sum(map(len, decoded)) - before))

    monkeypatch.setattr(train, "finish_run", load_instead_of_training)
    monkeypatch.setattr(kfold, "_predict_fold",
                        lambda run_dir, images, held_out: np.full((held_out.sum(), 2), 0.5))
    flags = ["--folds", "3", "--preset", "seed-cifar10", "--cache", "disk",
             "--cache-dir", str(cache_dir)]
    if command == "train --folds":
        code = train_command.main(["--data", str(folder), *flags, "--run-dir", str(tmp_path / "cv")])
    else:
        code = doctor.main([str(folder), "--label-issues", *flags, "--out-dir", str(tmp_path / "cv")])
    assert code == 0 and len(loads) == 3
    assert sorted(p for call in decoded for p in call) == all_files(folder)  # each file once
    assert [count for _, _, count in loads] == [0, 0, 0]
    photos = load(folder, cache_dir, mode="ram")
    by_file = {path: pixels for split in (photos.train, photos.val, photos.calibration)
               for path, pixels in zip(split.paths, split.pixels)}
    for splits, storage, _ in loads:
        assert storage == {"mode": "disk", "folders": [str(the_cache(cache_dir))]}
        for pixels, photo_paths in splits:  # the right rows for the links' photos
            np.testing.assert_array_equal(pixels, [by_file[path] for path in photo_paths])


def test_distill_and_prune_read_the_images_as_their_run_did_unless_told(folder, cache_dir, tmp_path):
    from catsdogs.commands import distill, prune

    run_dir = tmp_path / "teacher"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg.run_config_dict(TrainConfig(
        data=str(folder), preset="seed-cifar10", epochs=3, learning_rate=1e-3, cache="disk",
        cache_dir=str(cache_dir)))))
    for name in ("model.keras", "class_names.json"):
        (run_dir / name).write_text("")  # only their presence is checked before training
    for module, argv in ((distill, [str(run_dir)]), (prune, [str(run_dir), "--keep", "0.5"])):
        parser = module.build_parser()
        config = module.config_from_args(parser.parse_args(argv))
        assert (config.cache, config.cache_dir) == ("disk", str(cache_dir))
        config = module.config_from_args(parser.parse_args([*argv, "--cache", "none"]))
        assert (config.cache, config.cache_dir) == ("none", str(cache_dir))


def test_a_presets_adapt_reads_a_bounded_random_sample_not_every_training_image(
        folder, cache_dir, monkeypatch):
    import dataclasses

    from catsdogs.models import presets
    from catsdogs.training import train

    reads, original = [], cache.DiskArray.read
    monkeypatch.setattr(cache.DiskArray, "read",
                        lambda self, rows: reads.append(len(rows)) or original(self, rows))
    data = load(folder, cache_dir)
    reads.clear()
    sample = train.adapt_sample(data.train, seed=1, count=4)
    assert reads == [4] and len(data.train) > 4  # the sample's rows alone
    rows = [i for i, image in enumerate(data.train.pixels)
            for picked in sample if np.array_equal(image, picked)]
    assert len(set(rows)) == 4 and rows == sorted(rows)  # 4 images, in file order
    np.testing.assert_array_equal(train.adapt_sample(data.train, seed=1, count=4), sample)
    assert not np.array_equal(train.adapt_sample(data.train, seed=2, count=4), sample)
    assert len(train.adapt_sample(data.train, seed=1, count=100)) == len(data.train)
    # and training adapts the whitening preset from such a sample
    adapted = []
    preset = presets.get_preset("fast-cifar10")
    monkeypatch.setitem(presets.PRESETS, "fast-cifar10", dataclasses.replace(
        preset, adapt=lambda model, pixels: adapted.append(len(pixels)) or preset.adapt(model, pixels)))
    monkeypatch.setattr(train, "ADAPT_IMAGES", 3)
    config = train.resolve_config(TrainConfig(data=str(folder), preset="fast-cifar10",
                                              cache="disk", cache_dir=str(cache_dir)))
    train._build_model(config, train._prepare(config, train._placement(config)))
    assert adapted == [3]


def test_local_workers_find_the_cache_filled_and_each_reads_only_its_shard(
        folder, cache_dir, decoded, monkeypatch, tmp_path):
    """The launcher settles `auto` over every worker's images (they share the machine's
    memory) and fills the cache before the workers start; each then loads its shard as
    training does, decoding nothing. The workers' training itself is left out."""
    from catsdogs.commands import train as train_command
    from catsdogs.training import distribute

    started = []

    def start_instead(argv, count):
        started.append((json.loads(Path(argv[argv.index("--config") + 1]).read_text()),
                        sum(map(len, decoded)), count))
        return 0

    monkeypatch.setattr(distribute, "run_local_workers", start_instead)
    monkeypatch.setattr(cache, "available_memory", lambda: 10_000)  # auto: disk
    assert train_command.main(["--data", str(folder), "--preset", "seed-cifar10",
                               "--cache-dir", str(cache_dir), "--local-workers", "2",
                               "--run-dir", str(tmp_path / "run")]) == 0
    (settings, decoded_before_start, workers), = started
    assert settings["cache"] == "disk" and workers == 2
    assert decoded_before_start == 16
    decoded.clear()
    rows = []
    for worker in range(2):
        data = load_image_data(TrainConfig(**settings), SIZE, shard=(worker, 2))
        splits = [s for s in (data.train, data.val, data.test, data.calibration) if s is not None]
        assert all(split.store.path.parent == the_cache(cache_dir) for split in splits)
        rows.append({int(row) for split in splits for row in split.rows})
    assert decoded == []
    assert not rows[0] & rows[1] and len(rows[0] | rows[1]) == 16  # each its own shard


def test_the_launcher_run_again_in_the_workers_network_namespace_leaves_the_cache_alone(
        folder, cache_dir, monkeypatch, tmp_path):
    """run_local_workers runs `train --local-workers` again inside the network namespace it
    makes, on the settings the launcher wrote: the cache is filled and its mode settled there
    already, so that pass passes them on without scanning the folder again."""
    from catsdogs.commands import train as train_command
    from catsdogs.data import datasets
    from catsdogs.training import distribute

    settled, written = [], []
    original = datasets.cache_for_workers
    monkeypatch.setattr(datasets, "cache_for_workers",
                        lambda *args: settled.append(args) or original(*args))
    monkeypatch.setattr(distribute, "run_local_workers", lambda argv, count: written.append(
        Path(argv[argv.index("--config") + 1]).read_text()) or 0)
    assert train_command.main(["--data", str(folder), "--preset", "seed-cifar10", "--cache",
                               "disk", "--cache-dir", str(cache_dir), "--local-workers", "2",
                               "--run-dir", str(tmp_path / "run")]) == 0
    settings = tmp_path / "settings.json"
    settings.write_text(written[0])
    monkeypatch.setenv(distribute.PRIVATE_NETWORK_VARIABLE, "1")
    assert train_command.main(["--config", str(settings), "--local-workers", "2"]) == 0
    assert len(settled) == 1
    assert json.loads(written[1]) == json.loads(written[0])  # the same settings, cache included
