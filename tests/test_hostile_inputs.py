"""Hostile inputs: images that decode far larger than their files, models that hold file or
process operations, and the multi-worker servers' reach from other machines."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from catsdogs.data.images import MAX_DECODED_BYTES
from catsdogs.errors import CatsDogsError
from catsdogs.inference.classifier import load
from catsdogs.inference.model_ops import saved_model_unknown_ops
from catsdogs.training.distribute import PRIVATE_NETWORK_VARIABLE, private_network_prefix

from conftest import REPO, TWO_CLASSES, one_error_line, write_class_images

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------- images


def gray16_png(path, side, value):
    """A side x side 16-bit grayscale PNG of one value, streamed through zlib: a 9400-pixel
    one is a few hundred kB on disk and never whole in this process's memory."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    row = b"\0" + struct.pack(">H", value) * side  # filter byte, then big-endian samples
    packer, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                                                                       16, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


DECODE_AND_MEASURE = """
import resource, sys
from catsdogs.data.images import ImageTooLarge, decode_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    result = "decoded %d" % int(decode_image(sys.argv[1], (150, 150)).mean())
except ImageTooLarge as error:
    result = "refused " + str(error)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown // 1024, result)  # ru_maxrss is in KiB on Linux
"""


def decode_in_subprocess(path):
    """(MiB the peak memory grew while decoding `path` at 150x150, what came of it)."""
    done = subprocess.run([sys.executable, "-c", DECODE_AND_MEASURE, str(path)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, result = done.stdout.strip().split(" ", 1)
    return int(grown), result


def test_a_9400_pixel_16_bit_png_is_refused_from_its_header_with_little_memory(tmp_path):
    path = gray16_png(tmp_path / "huge.png", 9400, 1000)  # under MAX_PIXELS, 169 MiB decoded
    assert path.stat().st_size < 1_000_000
    grown, result = decode_in_subprocess(path)
    assert result.startswith("refused too large: 9400x9400 I;16 pixels decode to 169 MiB")
    assert grown < 16, f"{grown} MiB for a refused image"  # it was never decoded


def test_a_large_16_bit_png_under_the_budget_decodes_shrunk_before_conversion(tmp_path):
    path = gray16_png(tmp_path / "large.png", 6000, 40000)  # 69 MiB decoded: under the budget
    assert 6000 * 6000 * 2 < MAX_DECODED_BYTES
    grown, result = decode_in_subprocess(path)
    assert result == f"decoded {round(40000 * 255 / 65535)}"  # 16 bits scaled to 8
    # Pillow's 69 MiB and small copies; converting at full size took 8 bytes a pixel (275 MiB)
    assert grown < 110, f"{grown} MiB to decode a 69 MiB image"


# ---------------------------------------------------------------- models


@pytest.fixture
def hostile_saved_model(tmp_path):
    """A SavedModel with a pixels signature that also writes a file of its choosing."""
    import tensorflow as tf

    target = tmp_path / "written-by-the-model.txt"

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve(self, pixels):
            tf.io.write_file(str(target), "the model ran")
            return {"probabilities": tf.nn.softmax(tf.reduce_mean(pixels, [1, 2])[:, :2])}

    module = Hostile()
    folder = tmp_path / "hostile"
    tf.saved_model.save(module, str(folder), signatures={"serving_pixels": module.serve})
    (folder / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    return folder, target


def test_a_saved_model_that_writes_files_is_refused_before_it_runs(hostile_saved_model):
    folder, target = hostile_saved_model
    with pytest.raises(CatsDogsError, match=r"refused to load: the SavedModel holds operations "
                                            r"a classifier never needs \(WriteFile\)"):
        load(folder)
    assert not target.exists()


def test_predict_refuses_it_in_one_line_naming_trust_model(hostile_saved_model, tmp_path, capsys):
    from catsdogs.commands.predict import main

    folder, target = hostile_saved_model
    write_class_images(tmp_path / "photos", TWO_CLASSES, 1, size=(32, 32))
    line = one_error_line(capsys, main, [str(folder), str(tmp_path / "photos")], alone=False)
    assert "--trust-model" in line and "WriteFile" in line
    assert not target.exists()


def test_trust_model_loads_it_and_it_really_writes(hostile_saved_model):
    folder, target = hostile_saved_model
    classifier = load(folder, trust_model=True)
    classifier.probabilities(np.zeros((1, 32, 32, 3), np.float32))
    assert target.read_text() == "the model ran"  # what the check keeps from running


def test_the_presets_saved_models_hold_only_classifier_ops(tmp_path):
    from catsdogs.inference.saved_model import write_saved_model
    from catsdogs.models.presets import PRESETS

    model = PRESETS["seed-catsdogs"].build(2)
    write_saved_model(model, tmp_path / "ours", ["cats", "dogs"])
    model.export(str(tmp_path / "keras"), verbose=False)
    assert saved_model_unknown_ops(tmp_path / "ours") == set()
    assert saved_model_unknown_ops(tmp_path / "keras") == set()


@pytest.mark.slow
def test_every_presets_saved_model_holds_only_classifier_ops(tmp_path):
    from catsdogs.inference.saved_model import write_saved_model
    from catsdogs.models.presets import PRESETS

    def kinds(model):  # what decides a graph's op types: each layer's class and activation
        return {(type(layer).__name__, str(layer.get_config().get("activation")))
                for layer in model._flatten_layers(include_self=False)}

    checked = set()
    for name, preset in PRESETS.items():
        model = preset.build(10)
        if kinds(model) <= checked:  # no layer kind another preset's graph did not hold
            continue
        checked |= kinds(model)
        write_saved_model(model, tmp_path / name, [f"c{i}" for i in range(10)])
        assert saved_model_unknown_ops(tmp_path / name) == set(), name


def test_an_onnx_model_with_a_custom_domain_operator_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("RunShell", ["pixels"], ["probabilities"], domain="evil.ops")
    graph = helper.make_graph([node], "hostile", [helper.make_tensor_value_info(
        "pixels", TensorProto.FLOAT, [None, 32, 32, 3])], [helper.make_tensor_value_info(
        "probabilities", TensorProto.FLOAT, [None, 2])])
    path = tmp_path / "hostile.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("evil.ops", 1)]), path)
    with pytest.raises(CatsDogsError, match=r"\.onnx model holds operations .*evil\.ops:RunShell"):
        load(path, class_names=["cats", "dogs"])


def test_a_tflite_model_with_flex_ops_is_refused(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def hostile(pixels):
        tf.io.write_file(str(tmp_path / "flex.txt"), "the model ran")
        return tf.nn.softmax(pixels[:, :2])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [hostile.get_concrete_function()], hostile)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "hostile.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(CatsDogsError, match=r"\.tflite model holds operations .*FlexWriteFile"):
        load(path, class_names=["cats", "dogs"])
    assert not (tmp_path / "flex.txt").exists()


# ---------------------------------------------------------------- multi-worker servers


def listening_ports(pid="self"):
    """TCP ports listened on in the network namespace of process `pid`, from /proc."""
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":  # LISTEN
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


SERVER = """
import json, os, socket, sys, time
from catsdogs.training.distribute import bring_up_loopback, free_ports
bring_up_loopback()
port = free_ports(1)[0]
import tensorflow as tf
tf.distribute.Server(tf.train.ClusterSpec({"worker": [f"127.0.0.1:{port}"]}), "worker", 0)
print(port, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(private_network_prefix() is None, reason="no network namespaces here")
def test_a_workers_server_in_the_private_network_is_not_listening_outside_it():
    server = subprocess.Popen([*private_network_prefix(), sys.executable, "-c", SERVER],
                              env={**ENV, PRIVATE_NETWORK_VARIABLE: "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline())
        assert port in listening_ports(server.pid)  # TensorFlow's server, on every interface
        assert port not in listening_ports()  # ... of a namespace no one else is in
    finally:
        server.kill()
        server.wait()


def worker_processes(root_pid):
    """Process ids of `root_pid`'s descendants whose environment holds a TF_CONFIG, with its
    port."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    children.setdefault(int(stat.read().rsplit(")", 1)[1].split()[1]),
                                        []).append(int(entry))
            except OSError:
                continue
    found, pending = {}, [root_pid]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            environ = dict(item.split("=", 1) for item in open(f"/proc/{pid}/environ").read()
                           .split("\0") if "=" in item)
        except OSError:
            continue
        if "TF_CONFIG" in environ:
            config = json.loads(environ["TF_CONFIG"])
            address = config["cluster"]["worker"][config["task"]["index"]]
            found[pid] = int(address.rsplit(":", 1)[1])
    return found


@pytest.mark.slow
@pytest.mark.skipif(private_network_prefix() is None, reason="no network namespaces here")
def test_local_workers_listen_where_no_other_machine_reaches(tmp_path):
    data = tmp_path / "images"
    write_class_images(data / "train", TWO_CLASSES, 8, size=(32, 32), seed=1)
    write_class_images(data / "validation", TWO_CLASSES, 4, size=(32, 32), seed=2)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "catsdogs", "train", "--data", str(data), "--preset",
         "seed-cifar10", "--epochs", "50", "--batch-size", "2", "--run-dir",
         str(tmp_path / "run"), "--local-workers", "2"], cwd=tmp_path, env=ENV,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + 240, {}
        while time.monotonic() < deadline and len(seen) < 2:
            seen = {pid: port for pid, port in worker_processes(launcher.pid).items()
                    if port in listening_ports(pid)}
            time.sleep(0.5)
        assert len(seen) == 2, "the two workers' servers never listened"
        assert not set(seen.values()) & listening_ports()
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
