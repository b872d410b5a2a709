"""Every export format, loaded by the runtime that will serve it, agrees with the Keras model."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import catsdogs
from catsdogs.inference import runtimes
from catsdogs.config import TrainConfig
from catsdogs.data.datasets import scan_class_folders
from catsdogs.commands.export import main as export_main
from catsdogs.inference.export import FILE_NAMES, export
from catsdogs.inference.saved_model import write_saved_model
from catsdogs.data.images import decode_many

from conftest import (SAMPLE_DATA, bomb_png_bytes, gray16_png_bytes, one_error_line,
                      write_class_images)

CIFAR_TEST = SAMPLE_DATA / "cifar10" / "test"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """seed-cifar10 trained briefly on the shipped CIFAR-10 sample (200 images)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    return catsdogs.train(TrainConfig(dataset="cifar10", data=str(SAMPLE_DATA / "cifar10"),
                                      epochs=8, batch_size=16, run_dir=str(run_dir)))


@pytest.fixture(scope="module")
def exports(trained_run):
    return export(trained_run.dir, ["all"], out=trained_run.dir / "exports")


@pytest.fixture(scope="module")
def sample_pixels():
    names, paths, labels, _ = scan_class_folders(CIFAR_TEST)
    pixels, _, _, _ = decode_many(paths, (32, 32), progress=False)
    return pixels.astype(np.float32), paths


@pytest.fixture(scope="module")
def keras_probabilities(exports, sample_pixels):
    return runtimes.open_keras(exports["keras"])(sample_pixels[0])


@pytest.mark.parametrize("name, tolerance", [
    ("saved_model", 1e-4), ("tflite", 1e-4), ("onnx", 1e-4),
    ("tflite-fp16", 2e-3),  # float16 weights: rounding at 3 significant digits, not 1e-4
])
def test_float_formats_match_keras(name, tolerance, exports, sample_pixels, keras_probabilities):
    probabilities = runtimes.OPENERS[name](exports[name])(sample_pixels[0])
    assert np.abs(probabilities - keras_probabilities).max() <= tolerance
    assert (probabilities.argmax(1) == keras_probabilities.argmax(1)).all()


def test_every_runtime_gives_its_size_as_python_ints_and_serves_its_metadata(exports):
    """TFLite gives its input shape as NumPy int32: kept so, serve's memory bound overflowed to
    a negative figure and its /metadata could not be encoded as JSON."""
    from fastapi.testclient import TestClient

    from catsdogs.serve.app import create_app
    from catsdogs.serve.memory import memory_bound
    from catsdogs.serve.settings import ServeConfig

    for name, path in exports.items():
        size = runtimes.OPENERS[name](path).image_size
        assert size == (32, 32) and all(type(side) is int for side in size), (name, size)
    classifier = catsdogs.load(exports["tflite"])
    assert memory_bound(800_000_000, ServeConfig(), classifier.image_size)[0] > 2**31
    answer = TestClient(create_app(classifier)).get("/v1/models/catsdogs/metadata")
    assert answer.status_code == 200 and answer.json()["image_size"] == [32, 32]


def test_int8_tflite_agrees_with_keras_on_the_sample(exports, sample_pixels, keras_probabilities):
    probabilities = runtimes.open_tflite(exports["tflite-int8"])(sample_pixels[0])
    agreement = (probabilities.argmax(1) == keras_probabilities.argmax(1)).mean()
    assert agreement >= 0.95
    from catsdogs.inference.runtimes import tflite_interpreter
    details = tflite_interpreter(exports["tflite-int8"]).get_tensor_details()
    assert sum(d["dtype"] == np.int8 for d in details) > 10  # really integer inside


def test_saved_model_takes_image_bytes_and_returns_class_names(trained_run, exports, keras_probabilities,
                                                               sample_pixels):
    classify = runtimes.open_saved_model_bytes(exports["saved_model"])
    # PNG, lossless: the graph decodes exactly the pixels Pillow gave the Keras model. (JPEG
    # decoders may round a few pixels differently; the saved_model_cli test sends a JPEG.)
    encoded = []
    for pixels in sample_pixels[0].astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    probabilities, names = classify(encoded)
    expected = [trained_run.class_names[i] for i in keras_probabilities.argmax(1)]
    assert names == expected
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)


@pytest.mark.parametrize("hostile, reason", [(bomb_png_bytes(), "decompression bomb"),
                                             (b"just text", "not a JPEG, PNG, GIF or BMP")])
def test_saved_model_refuses_bombs_before_decoding(hostile, reason, exports):
    import tensorflow as tf

    classify = runtimes.open_saved_model_bytes(exports["saved_model"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=reason):
        classify([hostile])


@pytest.fixture(scope="module")
def bytes_signature(tmp_path_factory):
    """The bytes signature of an untrained seed-cifar10's SavedModel (no training needed to
    compare decoders), and the Keras model it was written from."""
    from catsdogs.models.presets import get_preset

    model = get_preset("seed-cifar10").build(2)
    folder = tmp_path_factory.mktemp("bytes") / "saved_model"
    write_saved_model(model, folder, ["cats", "dogs"])
    return runtimes.open_saved_model_bytes(folder), model


def encoded(pixels, format, **options):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format, **options)
    return buffer.getvalue()


def test_a_small_16_bit_png_of_huge_size_is_refused_by_the_saved_model_before_decoding(
        bytes_signature):
    classify, _ = bytes_signature
    bomb = gray16_png_bytes(9400)  # ~180 kB, under the pixel limit, 265 MB as 8-bit RGB
    grown = peak_growth_while_refused(classify, bomb, "decodes to over 128 MiB")
    assert grown < 64 * 2**20, f"peak grew {grown / 2**20:.0f} MiB"


def peak_growth_while_refused(classify, hostile, reason):
    """Bytes the process's peak memory grew by while the signature refused `hostile`."""
    import tensorflow as tf

    from catsdogs.serve.memory import process_memory

    classify([encoded(np.zeros((32, 32, 3), np.uint8), "PNG")])  # traced before the peak
    with open("/proc/self/clear_refs", "w") as reset:  # VmHWM := VmRSS from here
        reset.write("5")
    before = process_memory()["VmRSS"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=reason):
        classify([hostile])
    return process_memory()["VmHWM"] - before


def animated_gif(frames, side):
    """`frames` frames of one colour each (each differs from the last, so none is merged)."""
    images = [Image.new("RGB", (side, side), (40 * i % 256, 90, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


def test_an_animated_gif_counts_every_frame_against_the_budget(bytes_signature):
    """TensorFlow's GIF decoder holds every frame at the canvas size: 40 frames of 1500 x 1500
    (115 kB) would take 270 MB; the graph counts the frames first and refuses it."""
    import tensorflow as tf

    from catsdogs.inference.saved_model import _gif_frames

    classify, _ = bytes_signature
    bomb = animated_gif(40, 1500)
    assert float(_gif_frames(tf.constant(bomb))) == 40
    assert float(_gif_frames(tf.constant(animated_gif(1, 20)))) == 1
    grown = peak_growth_while_refused(classify, bomb, "GIFs every frame")
    assert grown < 64 * 2**20, f"peak grew {grown / 2**20:.0f} MiB"


def test_the_saved_model_takes_a_small_animated_gif_by_its_first_frame(bytes_signature):
    from catsdogs.data.images import decode_image

    classify, model = bytes_signature
    files = [animated_gif(3, 32), animated_gif(1, 32)]
    probabilities, _ = classify(files)
    expected = runtimes.keras_probabilities(model, np.stack(
        [decode_image(f"image {index}", (32, 32), data) for index, data in enumerate(files)]))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_the_saved_model_decodes_jpegs_and_pngs_as_the_keras_path_does(bytes_signature):
    from catsdogs.data.images import decode_image

    classify, model = bytes_signature
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (32, 32, 3), np.uint8)
    # 8000 x 6000: 144 MB as RGB, over the budget unless decoded at libjpeg's 1/8 scale
    photo = np.asarray(Image.fromarray(small).resize((8000, 6000), Image.Resampling.BILINEAR))
    files = [encoded(small, "PNG"), encoded(small, "JPEG", quality=90),
             encoded(photo, "JPEG", quality=90)]
    probabilities, _ = classify(files)
    expected = runtimes.keras_probabilities(model, np.stack(
        [decode_image(f"image {index}", (32, 32), data) for index, data in enumerate(files)]))
    # the small files decode to the same pixels (the JPEG by the same libjpeg method); the
    # photo, at the same 1/8 scale, is then resized by TensorFlow's filter, not Pillow's
    np.testing.assert_allclose(probabilities[:2], expected[:2], atol=1e-5)
    np.testing.assert_allclose(probabilities[2], expected[2], atol=1e-3)  # measured: 1e-4


def test_saved_model_cli_lists_both_signatures_and_classifies_a_jpeg(exports, tmp_path):
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([cli, "show", "--dir", exports["saved_model"], "--all"],
                           capture_output=True, text=True, timeout=120)
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['serving_pixels']" in shown.stdout and "DT_STRING" in shown.stdout
    jpeg = next(CIFAR_TEST.glob("cat/*.jpg"))
    np.save(tmp_path / "jpeg.npy", np.array([jpeg.read_bytes()]))
    ran = subprocess.run([cli, "run", "--dir", exports["saved_model"], "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          "--inputs", f"image_bytes={tmp_path / 'jpeg.npy'}"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    names = json.loads((exports["saved_model"] / "class_names.json").read_text())
    assert "Result for output key class_name" in ran.stdout
    assert any(f"b'{name}'" in ran.stdout for name in names)


def test_every_file_is_written_and_loads_with_catsdogs(exports, trained_run):
    assert set(exports) == set(FILE_NAMES)
    for name in ("keras", "saved_model"):
        assert catsdogs.load(exports[name]).class_names == trained_run.class_names


def test_a_failed_export_leaves_the_previous_one(trained_run, exports, monkeypatch):
    import tensorflow as tf

    before = {p: p.read_bytes() for p in exports["saved_model"].rglob("*") if p.is_file()}

    def crash(module, folder, signatures=None):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "saved_model.pb").write_bytes(b"half")
        raise OSError("simulated crash mid-export")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    import keras
    model = keras.saving.load_model(exports["keras"])
    with pytest.raises(OSError):
        write_saved_model(model, exports["saved_model"], trained_run.class_names)
    after = {p: p.read_bytes() for p in exports["saved_model"].rglob("*") if p.is_file()}
    assert after == before
    assert not list(exports["saved_model"].parent.glob(".saved_model.*"))


def test_an_export_into_the_folder_of_its_model_is_one_line(exports, capsys):
    """An ensemble's folder (class_names.json beside model.keras) reads as an earlier export;
    writing there would replace the model it exports."""
    model = exports["keras"]
    before = model.read_bytes()
    line = one_error_line(capsys, export_main, [str(model), "--format", "keras", "--out",
                                                str(model.parent)])
    assert "--out is the folder of the model it exports" in line
    assert model.read_bytes() == before
    (model.parent / "calibration.json").write_text("{}")  # an ensemble's folder: not an export
    line = one_error_line(capsys, export_main, [str(model), "--format", "onnx", "--out",
                                                str(model.parent)])
    assert "it holds calibration.json" in line
    (model.parent / "calibration.json").unlink()


def test_check_prints_a_table_for_every_format(trained_run, tmp_path, capsys):
    code = export_main([str(trained_run.dir), "--format", "tflite", "onnx", "--out",
                        str(tmp_path / "out"), "--check", str(CIFAR_TEST)])
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("format"))
    assert [line.split()[0] for line in table[header + 1:]] == ["tflite", "onnx", "keras"]
    assert all("100.0%" in line for line in table[header + 1:])  # agreement of float formats



@pytest.mark.parametrize("flag,formats", [("--check", ["onnx"]),
                                          ("--calibration", ["tflite-int8"])])
def test_a_check_or_calibration_folder_missing_is_said_before_anything_is_written(
        trained_run, tmp_path, capsys, flag, formats):
    line = one_error_line(capsys, export_main, [str(trained_run.dir), "--format", *formats,
                                                "--out", str(tmp_path / "out"), flag,
                                                str(tmp_path / "nowhere")])
    assert f"give {flag}" in line and "nowhere" in line
    assert not (tmp_path / "out").exists()


def test_export_and_check_print_no_tensorflow_noise(trained_run, tmp_path, capfd):
    """The int8 converter's summary, the interpreter's XNNPACK notice and tf2onnx's NumPy
    warning are not the user's business: stderr stays empty (fd 2, where C++ writes)."""
    assert export_main([str(trained_run.dir), "--format", "tflite-int8", "onnx", "--out",
                        str(tmp_path / "out"),
                        "--check", str(SAMPLE_DATA / "cifar10" / "test")]) == 0
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "XNNPACK" not in err and "np.object" not in err, err


@pytest.mark.parametrize("flags", [["--calibration", "photos/"], ["--int8-io"]])
def test_int8_flags_without_the_int8_format_are_one_line_not_ignored(flags, tmp_path, capsys):
    line = one_error_line(capsys, export_main, ["nowhere.keras", "--format", "tflite", "onnx",
                                                *flags, "--out", str(tmp_path / "out")])
    assert flags[0] in line and "tflite-int8" in line
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_one_line(trained_run, capsys):
    assert export_main([str(trained_run.dir), "--format", "tflite-int4"]) == 2
    assert "unknown format 'tflite-int4'" in capsys.readouterr().err


def test_a_check_folder_holding_another_class_is_one_line(tmp_path):
    """--check's photos are labelled by their folders: one the model has no class for is
    named, before any format runs."""
    from catsdogs.errors import CatsDogsError
    from catsdogs.inference.export import check

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    write_class_images(tmp_path / "photos", {"cats": (1, 2, 3), "birds": (4, 5, 6)}, 2)
    with pytest.raises(CatsDogsError, match=r"\['birds'\] are not classes of the model"):
        check({"keras": tmp_path / "model" / "model.keras"}, tmp_path / "photos")


def test_a_config_json_that_is_no_catsdogs_run_names_no_calibration_folder(tmp_path):
    """int8 export looks for its calibration photos in the run's config.json: a damaged one,
    or another tool's (a model downloaded with its own config.json), names none, and export
    then asks for --calibration."""
    from catsdogs.inference.export import training_folder_of

    for text in ('{"data": ', '{"architectures": ["ResNet"], "hidden_size": 768}'):
        (tmp_path / "config.json").write_text(text)
        assert training_folder_of(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"data": str(tmp_path / "photos")}))
    assert training_folder_of(tmp_path) == tmp_path / "photos"


def test_export_offers_no_trust_model_flag_it_would_never_read():
    """export reads Keras models only: --trust-model (for SavedModel, .tflite and .onnx
    models) is no flag of it, while predict keeps it."""
    from catsdogs.commands import export as export_command
    from catsdogs.commands import predict as predict_command

    def dests(module):
        return {action.dest for action in module.build_parser()._actions}

    assert "trust_model" not in dests(export_command)
    assert {"trust_model", "class_names", "input_scale"} <= dests(predict_command)
