"""Hostile files are refused with one line and exit code 2: archives that write outside their
folder, downloads with the wrong SHA-256, `.keras` files that name code outside Keras."""

import hashlib
import io
import json
import tarfile
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from catsdogs.commands.download import main as download_main
from catsdogs.data import archives, download
from catsdogs.inference.classifier import load
from catsdogs.errors import CatsDogsError
from catsdogs.commands.predict import main as predict_main

from conftest import offline_like_keras, one_error_line


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def add_file(archive, name, data):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    archive.addfile(member, io.BytesIO(data))


def add_link(archive, name, target, kind):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    archive.addfile(member)


HOSTILE_TARS = {  # what the member is called in the refusal -> how the archive gets it
    "'..' step": lambda tar: add_file(tar, "cats/../../escaped.png", png_bytes()),
    "absolute path": lambda tar: add_file(tar, "/tmp/catsdogs-escaped.png", png_bytes()),
    "symbolic link": lambda tar: add_link(tar, "cats/link.png", "/etc/passwd", tarfile.SYMTYPE),
    "hard link": lambda tar: add_link(tar, "cats/hard.png", "/etc/passwd", tarfile.LNKTYPE),
}


def write_tar(path, *extra):
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "cats/a.png", png_bytes())
        add_file(tar, "dogs/b.png", png_bytes())
        for add in extra:
            add(tar)
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", HOSTILE_TARS)
def test_hostile_tar_member_refuses_the_whole_archive(kind, tmp_path, capsys):
    archive = write_tar(tmp_path / "data.tar.gz", HOSTILE_TARS[kind])
    into = tmp_path / "out" / "unpacked"
    line = one_error_line(capsys, download_main,
                          ["--archive", str(archive), "--sha256", sha256(archive), "--into", str(into)])
    assert "refused archive" in line and kind in line
    assert not (tmp_path / "out").exists()  # nothing written, not even the target's parent
    assert not (tmp_path / "escaped.png").exists()


def test_zip_with_a_dot_dot_member_is_refused(tmp_path, capsys):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("cats/a.png", png_bytes())
        zipped.writestr("../escaped.png", png_bytes())
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(tmp_path / "u")])
    assert "'../escaped.png'" in line and "'..' step" in line
    assert not (tmp_path / "u").exists() and not (tmp_path / "escaped.png").exists()


def test_wrong_checksum_is_refused_before_unpacking(tmp_path, capsys):
    archive = write_tar(tmp_path / "data.tar.gz")
    before = archive.read_bytes()
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256", "0" * 64,
                                                  "--into", str(tmp_path / "u")])
    assert "SHA-256 mismatch" in line and sha256(archive) in line
    assert not (tmp_path / "u").exists() and archive.read_bytes() == before


def test_pinned_dataset_checksum_is_checked_for_a_local_archive(tmp_path, capsys):
    fake = write_tar(tmp_path / "kagglecatsanddogs_5340.zip")
    line = one_error_line(capsys, download_main, ["petimages", "--archive", str(fake),
                                                  "--into", str(tmp_path / "pets")])
    assert "SHA-256 mismatch" in line and download.SOURCES["petimages"].sha256 in line


def test_a_safe_archive_unpacks_and_is_never_unpacked_over_a_folder(tmp_path, capsys):
    archive = write_tar(tmp_path / "data.tar.gz")
    into = tmp_path / "pets"
    assert download_main(["--archive", str(archive), "--sha256", sha256(archive),
                          "--into", str(into)]) == 0
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*.png")) == ["cats/a.png",
                                                                                   "dogs/b.png"]
    assert not list(tmp_path.glob(".pets.*"))  # no temporary folder left beside it
    (into / "cats" / "mine.txt").write_text("user data")
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into", str(into)])
    assert "already exists" in line and (into / "cats" / "mine.txt").read_text() == "user data"


def test_download_goes_through_keras_get_file_with_the_pinned_hash(monkeypatch, tmp_path):
    archive = write_tar(tmp_path / "pets.tar.gz")
    source = download.Source(url="https://example.org/pets.tar.gz", sha256=sha256(archive),
                             megabytes=1, image_folder="cats", about="a test archive")
    monkeypatch.setattr(download, "SOURCES", {"pets": source})
    asked = {}

    def from_cache(fname, origin=None, file_hash=None, hash_algorithm=None, **kwargs):
        asked.update(fname=fname, origin=origin, file_hash=file_hash, algorithm=hash_algorithm)
        return str(archive)

    monkeypatch.setattr(keras.utils, "get_file", from_cache)
    folder = download.fetch("pets", into=tmp_path / "unpacked")
    assert asked == {"fname": "pets.tar.gz", "origin": source.url, "file_hash": source.sha256,
                     "algorithm": "sha256"}
    assert folder == tmp_path / "unpacked" / "cats" and (folder / "a.png").is_file()


def test_failed_download_is_one_line(monkeypatch, tmp_path, capsys):
    url = download.SOURCES["petimages"].url
    monkeypatch.setattr(keras.utils, "get_file", offline_like_keras(url))
    line = one_error_line(capsys, download_main, ["petimages", "--into", str(tmp_path / "p")],
                          exit_code=1)  # the input was fine: the network failed
    assert "could not download (no connection: Temporary failure in name resolution)" in line
    assert line.count(url) == 1 and "--archive" in line


def test_cifar10_is_written_as_class_folders_once_and_never_over_a_folder(monkeypatch, tmp_path,
                                                                         capsys):
    """Keras' arrays (its pinned download) as PNG class folders that --data reads unchanged;
    an existing folder is left as it is, and an --archive for it is refused."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(12).reshape(-1, 1) % 10, np.arange(10).reshape(-1, 1)[::-1])
    monkeypatch.setattr(keras.datasets.cifar10, "load_data",
                        lambda: ((train, labels[0]), (test, labels[1])))
    into = tmp_path / "cifar10"
    assert download_main(["cifar10", "--into", str(into)]) == 0
    assert len(list((into / "train").rglob("*.png"))) == 12
    assert [p.name for p in (into / "test" / "truck").iterdir()] == ["00000.png"]
    from catsdogs.data.datasets import load_folders

    data = load_folders(into / "train", into / "test", (32, 32))
    assert data.class_names == list(download.CIFAR10_CLASSES)
    first = np.array(Image.open(into / "train" / "airplane" / "00000.png"))
    assert np.array_equal(first, train[0])  # lossless
    assert not list(tmp_path.glob(".cifar10*"))
    capsys.readouterr()
    for argv, said in ((["cifar10", "--into", str(into)], "already exists"),
                       (["cifar10", "--archive", "x.tar.gz", "--into", str(tmp_path / "n")],
                        "Keras' downloader")):
        assert said in one_error_line(capsys, download_main, argv)
    assert len(list(into.rglob("*.png"))) == 22


def test_not_an_archive(tmp_path):
    (tmp_path / "x.zip").write_text("hello")
    with pytest.raises(CatsDogsError, match="not a zip or tar archive"):
        archives.extract(tmp_path / "x.zip", tmp_path / "u")


def truncated_tar(path):
    """A tar.gz cut off in its second member's data, as an interrupted download leaves it."""
    noise = bytes(range(256)) * 400  # 100 kB that gzip cannot shrink to nothing
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "cats/a.png", png_bytes())
        add_file(tar, "dogs/b.bin", hashlib.sha512(noise).digest() * 2000)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    return path


def zip_with_a_bad_crc(path):
    """A zip whose member's bytes changed after it was written (its CRC-32 no longer fits)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cats/a.png", png_bytes())
    data = bytearray(path.read_bytes())
    data[data.index(b"PNG") + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def bz2_tar_with_changed_bytes(path):
    """A tar.bz2 whose compressed stream was changed in its second block (bz2 says "Invalid
    data stream", an OSError without an errno): the first block, and the first member, read
    well."""
    noise = b"".join(hashlib.sha512(i.to_bytes(4, "big")).digest() for i in range(40_000))
    with tarfile.open(path, "w:bz2") as tar:  # 2.5 MB that bz2 cannot shrink: three blocks
        add_file(tar, "cats/a.png", png_bytes())
        add_file(tar, "dogs/b.bin", noise)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):  # in the second block
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def zip_with_a_bad_directory(path):
    """A zip whose end record is whole but whose central directory is not: it passes
    is_zipfile, and opening it fails."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cats/a.png", png_bytes())
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    data[start:start + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damaged", [truncated_tar, zip_with_a_bad_crc,
                                     bz2_tar_with_changed_bytes, zip_with_a_bad_directory])
def test_a_damaged_archive_is_one_line_and_leaves_nothing(damaged, tmp_path, capsys):
    suffix = "zip" if "zip" in damaged.__name__ else "tar.bz2" if "bz2" in damaged.__name__ \
        else "tar.gz"
    archive = damaged(tmp_path / f"data.{suffix}")
    line = one_error_line(capsys, download_main, ["--archive", str(archive), "--sha256",
                                                  sha256(archive), "--into",
                                                  str(tmp_path / "pets")])
    assert "damaged archive" in line and "download it again" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]  # nothing unpacked


def rewrite_keras_config(source, target, change):
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as out:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            out.writestr(item, data)


@pytest.mark.parametrize("module", ["os", "subprocess", "evil_package.layers"])
def test_keras_file_naming_a_module_outside_keras_is_refused(module, tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "plain.keras")

    def plant(config):
        layer = config["config"]["layers"][-1]
        layer["module"], layer["class_name"], layer["registered_name"] = module, "Backdoor", None

    rewrite_keras_config(tmp_path / "plain.keras", tmp_path / "evil.keras", plant)
    (tmp_path / "class_names.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CatsDogsError, match=f"outside Keras .module '{module}'"):
        load(tmp_path / "evil.keras")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    line = one_error_line(capsys, predict_main, [str(tmp_path / "evil.keras"), str(tmp_path / "img")])
    assert module in line
    assert load(tmp_path / "plain.keras").class_names == ["a", "b"]  # the untouched file loads
