"""`catsdogs weights fetch`: Keras' downloader asked for the file keras.applications would
fetch, with its hash; no test touches the network."""

import hashlib
import os
from pathlib import Path

import keras
import pytest

from catsdogs import cli
from catsdogs.commands.weights import main
from catsdogs.errors import CatsDogsError
from catsdogs.models.presets import PRESETS, get_preset

from conftest import offline_like_keras, one_error_line

BACKBONE_PRESETS = [name for name, preset in PRESETS.items() if preset.pretrainable]


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """keras.utils.get_file recorded, writing an empty file where Keras would."""
    calls = []

    def get_file(fname, origin, file_hash=None, cache_subdir="datasets", cache_dir=None, **rest):
        calls.append({"fname": fname, "origin": origin, "file_hash": file_hash,
                      "cache_subdir": cache_subdir, "cache_dir": cache_dir, **rest})
        folder = tmp_path / "keras-home" if cache_dir is None else tmp_path / cache_dir
        path = folder / cache_subdir / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return str(path)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    return calls


@pytest.mark.parametrize("name", BACKBONE_PRESETS)
def test_fetch_asks_for_the_file_and_hash_keras_applications_would(name, downloads, monkeypatch,
                                                                   capsys):
    """What `--weights imagenet` makes keras.applications download, caught at Keras' own
    get_file, is what the command asks keras.utils.get_file for."""
    from keras.src.utils import file_utils

    wanted = []

    def applications_get_file(fname, origin, file_hash=None, cache_subdir="datasets", **rest):
        wanted.append((fname, origin, file_hash, cache_subdir))
        raise OSError("offline")

    monkeypatch.setattr(file_utils, "get_file", applications_get_file)
    with pytest.raises(CatsDogsError):
        get_preset(name).build(2, weights="imagenet")
    assert main(["fetch", name]) == 0
    call = downloads[0]
    assert [(call["fname"], call["origin"], call["file_hash"], call["cache_subdir"])] == wanted
    assert call["cache_dir"] is None  # Keras' own cache, where --weights imagenet looks
    out = capsys.readouterr().out
    assert call["fname"] in out and f"--preset {name} --weights imagenet" in out


def test_fetch_into_a_folder_saves_there_and_says_the_weights_flag(downloads, tmp_path, capsys):
    folder = tmp_path / "carry" / "weights"
    folder.mkdir(parents=True)
    (folder / ".convnext_tiny_notop.h5.tmp-99999.h5").write_bytes(b"half")  # a killed fetch's
    assert main(["fetch", "convnexttiny-catsdogs", "--into", str(folder)]) == 0
    assert downloads[0]["cache_dir"] == str(folder) and downloads[0]["cache_subdir"] == ""
    assert downloads[0]["fname"].startswith(".")  # under a hidden name until it is whole
    assert os.listdir(folder) == ["convnext_tiny_notop.h5"]
    out = capsys.readouterr().out
    assert f"--weights {folder / 'convnext_tiny_notop.h5'}" in out
    missing = tmp_path / "new" / "weights"  # made first: Keras would write to /tmp/.keras
    assert main(["fetch", "convnexttiny-catsdogs", "--into", str(missing)]) == 0
    assert (missing / "convnext_tiny_notop.h5").is_file()


def test_fetch_into_keeps_the_right_file_and_never_downloads_over_another(downloads, tmp_path,
                                                                          capsys, monkeypatch):
    from catsdogs.models.imagenet import ImagenetWeights

    weights = get_preset("mobilenetv3-catsdogs").imagenet
    target = tmp_path / weights.file
    target.write_bytes(b"someone's file")
    line = one_error_line(capsys, main, ["fetch", "mobilenetv3-catsdogs", "--into", str(tmp_path)])
    assert "not these weights" in line and str(target) in line
    assert target.read_bytes() == b"someone's file" and not downloads
    origin = weights.origin_and_hash()[0]
    monkeypatch.setattr(ImagenetWeights, "origin_and_hash",
                        lambda self: (origin, hashlib.sha256(b"someone's file").hexdigest()))
    assert main(["fetch", "mobilenetv3-catsdogs", "--into", str(tmp_path)]) == 0
    assert not downloads and target.read_bytes() == b"someone's file"  # the right one: kept


def test_an_unknown_name_is_one_line_listing_the_names(downloads, capsys):
    line = one_error_line(capsys, main, ["fetch", "mobilenet3-catsdogs"])
    assert "did you mean 'mobilenetv3-catsdogs'" in line
    assert all(name in line for name in BACKBONE_PRESETS)
    line = one_error_line(capsys, main, ["fetch", "seed-cifar10"])  # a preset without them
    assert "no ImageNet weights for 'seed-cifar10'" in line
    assert not downloads


@pytest.mark.parametrize("argv", [[], ["fetch"], ["get", "mobilenetv3-catsdogs"],
                                  ["fetch", "mobilenetv3-catsdogs", "--to", "x"]])
def test_bad_flags_are_one_line(argv, downloads, capsys):
    one_error_line(capsys, main, argv)
    assert not downloads


def test_into_a_file_and_a_failed_download_are_one_line(downloads, tmp_path, monkeypatch,
                                                        capsys):
    (tmp_path / "a-file").write_text("")
    line = one_error_line(capsys, main, ["fetch", "mobilenetv3-catsdogs", "--into",
                                         str(tmp_path / "a-file")])
    assert "not a folder" in line

    origin = get_preset("mobilenetv3-catsdogs").imagenet.origin_and_hash()[0]
    monkeypatch.setattr(keras.utils, "get_file", offline_like_keras(origin))
    line = one_error_line(capsys, main, ["fetch", "mobilenetv3-catsdogs"], exit_code=1)
    assert "could not download (no connection: Temporary failure in name resolution)" in line
    assert line.count(origin) == 1 and origin.endswith("_no_top_v2.h5") and "https_proxy" in line


def test_the_command_is_registered():
    assert "weights" in cli.COMMANDS


def test_fetch_into_leaves_a_running_fetchs_download_and_names_a_full_disk(downloads, tmp_path,
                                                                          capsys, monkeypatch):
    import errno

    weights = get_preset("convnexttiny-catsdogs").imagenet
    (tmp_path / weights.file).mkdir()  # not a file: refused in one line, not read
    line = one_error_line(capsys, main, ["fetch", "convnexttiny-catsdogs", "--into", str(tmp_path)])
    assert "not these weights" in line and not downloads
    (tmp_path / weights.file).rmdir()
    running = tmp_path / f".{weights.file}.tmp-1.h5"  # process 1's download, still going
    running.write_bytes(b"half")
    assert main(["fetch", "convnexttiny-catsdogs", "--into", str(tmp_path)]) == 0
    assert running.read_bytes() == b"half" and (tmp_path / weights.file).is_file()

    def disk_full(fname, origin, cache_dir=None, **rest):  # as a write raises it: no file named
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.utils, "get_file", disk_full)
    line = one_error_line(capsys, main, ["fetch", "convnexttiny-catsdogs", "--into",
                                         str(tmp_path / "other")], exit_code=1)
    assert "no space left on the disk" in line and "https_proxy" not in line
    assert str(tmp_path / "other") in line  # the folder it was writing to
    assert not [p for p in (tmp_path / "other").iterdir()]  # nothing half written left


def test_a_file_that_takes_the_name_during_the_download_is_never_replaced(tmp_path, capsys,
                                                                          monkeypatch):
    from catsdogs.models.imagenet import ImagenetWeights

    weights = get_preset("mobilenetv3-catsdogs").imagenet
    target = tmp_path / weights.file
    origin = weights.origin_and_hash()[0]
    monkeypatch.setattr(ImagenetWeights, "origin_and_hash",
                        lambda self: (origin, hashlib.sha256(b"theirs").hexdigest()))
    arrives = {"content": b"theirs"}

    def another_fetch_finishes_first(fname, origin, cache_dir=None, cache_subdir=None, **rest):
        target.write_bytes(arrives["content"])
        (Path(cache_dir) / fname).write_bytes(b"ours")
        return str(Path(cache_dir) / fname)

    monkeypatch.setattr(keras.utils, "get_file", another_fetch_finishes_first)
    assert main(["fetch", "mobilenetv3-catsdogs", "--into", str(tmp_path)]) == 0
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == [weights.file]
    target.unlink()
    arrives["content"] = b"a user's file"  # not these weights: refused, kept as it is
    line = one_error_line(capsys, main, ["fetch", "mobilenetv3-catsdogs", "--into", str(tmp_path)])
    assert "not these weights" in line and target.read_bytes() == b"a user's file"
    assert os.listdir(tmp_path) == [weights.file]
