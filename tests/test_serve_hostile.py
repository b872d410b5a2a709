"""catsdogs serve against a hostile client: image bombs, chunked uploads past the limit, JSON
that recurses, bytes where text is expected, slow and half-open connections, a foreign Host,
TF Serving's edge cases and nonsense flag values. Each gets one bounded, shaped answer.

Generated files only; 127.0.0.1 only; every count is fixed and every wait has a deadline."""

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx2
import numpy as np
import pytest
from PIL import Image

import catsdogs
from catsdogs.errors import CatsDogsError
from catsdogs.commands.serve import build_parser, main as serve_main, serve_config
from catsdogs.serve import app as app_module
from catsdogs.serve.app import ServeConfig, create_app
from catsdogs.serve.hosts import allowed_hosts
from catsdogs.serve.memory import process_memory

from conftest import REPO, free_port, gray16_png_bytes, one_error_line, serving_in_a_thread

PREDICT = "/v1/models/catsdogs:predict"
CLASSIFY = "/v1/models/catsdogs:classify"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An untrained seed-cifar10 two-class model and its class names."""
    from catsdogs.models.presets import get_preset

    run = tmp_path_factory.mktemp("hostile") / "run"
    run.mkdir()
    get_preset("seed-cifar10").build(2).save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    return run


@pytest.fixture(scope="module")
def classifier(run_dir):
    return catsdogs.load(run_dir)


def client_for(classifier, base_url="http://testserver", hosts=None, **settings):
    from fastapi.testclient import TestClient

    return TestClient(create_app(classifier, ServeConfig(**settings), hosts), base_url=base_url)


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


def png_bytes(size=(40, 32)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 90, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def error_of(response, status):
    """The {"error": ...} message of a response that must have `status`."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def metric(text, name, **labels):
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(re.escape(f"{name}{{{label_text}}}") + r" ([0-9.e+-]+)", text)
    return float(found.group(1)) if found else None


# ---------------------------------------------------------------- the decode budget


def test_a_small_16_bit_png_of_9400_squared_pixels_is_one_413_decoded_in_the_pool(
        classifier, monkeypatch):
    bomb = gray16_png_bytes(9400)
    assert len(bomb) < 300_000  # ~180 kB that decode to 169 MiB
    threads = []
    decode = app_module.decode_image

    def spy(*args):
        threads.append(threading.current_thread().name)
        return decode(*args)

    monkeypatch.setattr(app_module, "decode_image", spy)
    client = client_for(classifier)
    client.get("/healthz")  # the app and its thread pool started before the peak is reset
    with open("/proc/self/clear_refs", "w") as reset:  # VmHWM := VmRSS from here
        reset.write("5")
    before = process_memory()["VmRSS"]
    response = client.post(PREDICT, json={"instances": [b64(bomb)]})
    grown = process_memory()["VmHWM"] - before
    assert "decode to 169 MiB" in error_of(response, 413)
    assert threads and all(name.startswith("decode") for name in threads)
    assert grown < 48 * 2**20, f"peak grew {grown / 2**20:.0f} MiB"


def test_a_large_json_body_is_parsed_in_the_pool_and_a_small_one_on_the_loop(
        classifier, monkeypatch):
    threads = []
    parse = app_module._parse

    def spy(body, max_instances):
        threads.append((len(body), threading.current_thread().name))
        return parse(body, max_instances)

    monkeypatch.setattr(app_module, "_parse", spy)
    client = client_for(classifier)
    small = {"instances": [b64(png_bytes())]}
    # padding the JSON allows: a body past the inline limit that parses to the same request
    large = json.dumps(small).encode() + b" " * app_module.INLINE_PARSE_BYTES
    for body in (json.dumps(small).encode(), large):
        response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
    (small_size, small_thread), (large_size, large_thread) = threads
    assert small_size <= app_module.INLINE_PARSE_BYTES < large_size
    assert not small_thread.startswith("decode") and large_thread.startswith("decode")


# ---------------------------------------------------------------- uploads: bounded, in memory


def multipart_head(boundary, name="big.png"):
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode()


@pytest.fixture
def no_disk(tmp_path, monkeypatch):
    """Every temporary file goes to a fresh folder, and a SpooledTemporaryFile cannot be made:
    returns the folder, which must stay empty."""
    from starlette import formparsers

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was spooled")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", refuse)
    return folder


def test_a_chunked_multipart_upload_stops_at_the_limit_with_nothing_on_disk(classifier,
                                                                            no_disk):
    app = create_app(classifier, ServeConfig(max_upload_mb=0.2))
    boundary, piece, consumed = "hostile", b"\x89" * 10_000, [0]

    async def body():  # 3 MB, sent chunked: the server only learns the size as it reads
        yield multipart_head(boundary)
        for _ in range(300):
            consumed[0] += len(piece)
            yield piece

    async def send():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post(CLASSIFY, content=body(), headers={
                "content-type": f"multipart/form-data; boundary={boundary}"})

    response = asyncio.run(send())
    assert "over 200,000 bytes" in error_of(response, 413)
    assert consumed[0] <= 200_000 + len(piece)
    assert list(no_disk.iterdir()) == []


def test_an_upload_larger_than_starlettes_spool_is_classified_in_memory(classifier, no_disk):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 800, 3), np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    assert len(buffer.getvalue()) > 1024 * 1024  # past Starlette's 1 MB spool threshold
    client = client_for(classifier, max_upload_mb=3, max_inflight_mb=6)
    response = client.post(CLASSIFY, files=[("files", ("noise.png", buffer.getvalue(),
                                                       "image/png"))])
    assert response.status_code == 200, response.text
    assert [row["file"] for row in response.json()["results"]] == ["noise.png"]
    assert list(no_disk.iterdir()) == []


def test_a_multipart_body_cut_short_is_a_400(classifier):
    boundary = "cut"
    response = client_for(classifier).post(
        CLASSIFY, content=multipart_head(boundary) + png_bytes()[:20],
        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "malformed multipart body" in error_of(response, 400)


# ---------------------------------------------------------------- one error shape


def test_json_nested_100000_deep_is_a_400(classifier):
    response = client_for(classifier).post(PREDICT, content=b"[" * 100_000 + b"]" * 100_000,
                                           headers={"content-type": "application/json"})
    assert "nested too deeply" in error_of(response, 400)


def test_a_non_ascii_api_key_is_a_401(classifier):
    client = client_for(classifier, api_key="s3cret")
    response = client.get("/v1/models/catsdogs", headers={"X-API-Key": "clé".encode("utf-8")})
    assert "X-API-Key" in error_of(response, 401)
    assert client.get("/v1/models/catsdogs", headers={"X-API-Key": "s3cret"}).status_code == 200


@pytest.mark.parametrize("method, path, status, words", [
    ("POST", CLASSIFY + "?explain=abc", 400, "explain"),  # FastAPI's validation error
    ("GET", PREDICT, 405, "Method Not Allowed"),  # Starlette's HTTPException
    ("GET", "/nowhere", 404, "Not Found"),
    ("POST", "/v1/models/dogs:predict", 404, "this server serves /v1/models/catsdogs"),
])
def test_framework_errors_have_the_servers_error_shape(classifier, method, path, status, words):
    kwargs = {"files": [("files", ("a.png", png_bytes(), "image/png"))]} if method == "POST" else {}
    response = client_for(classifier).request(method, path, **kwargs)
    assert words in error_of(response, status)


def test_an_internal_error_is_a_shaped_500_counted_in_metrics_and_logged(classifier):
    import logging

    from catsdogs.console import log

    client = client_for(classifier)
    records = []
    handler = logging.Handler()
    handler.emit = records.append

    def broken(pixels):
        raise RuntimeError("a bug")

    client.app.state.batcher.predict = broken
    log().addHandler(handler)
    try:
        response = client.post(PREDICT, json={"instances": [b64(png_bytes())]})
    finally:
        log().removeHandler(handler)
    assert error_of(response, 500) == "internal: RuntimeError"
    text = client.get("/metrics").text
    assert metric(text, "catsdogs_requests_total", code="500", endpoint="predict") == 1
    assert any("internal error on POST" in record.getMessage() and record.exc_info
               for record in records)


# ---------------------------------------------------------------- the Host allow-list


def test_a_server_without_a_key_answers_only_its_own_names(classifier):
    hosts = allowed_hosts("127.0.0.1", ("pets.lan",))
    client = client_for(classifier, base_url="http://127.0.0.1:8501", hosts=hosts)
    assert client.get("/v1/models/catsdogs").status_code == 200
    for name in ("localhost:8501", "[::1]:8501", "pets.lan"):
        assert client.get("/v1/models/catsdogs", headers={"Host": name}).status_code == 200
    refused = client.get("/v1/models/catsdogs", headers={"Host": "evil.example"})
    assert "Host header not allowed" in error_of(refused, 400)
    assert metric(client.get("/metrics").text, "catsdogs_requests_total", code="400",
                  endpoint="status") == 1
    keyed = client_for(classifier, hosts=hosts, api_key="k")
    assert keyed.get("/v1/models/catsdogs", headers={"Host": "evil.example",
                                                     "X-API-Key": "k"}).status_code == 200


def test_serve_flags_give_the_host_allow_list():
    args = build_parser().parse_args(["run", "--host", "::1", "--allowed-hosts", "pets.lan, Box"])
    assert serve_config(args).host_names == ("localhost", "127.0.0.1", "[::1]", "pets.lan",
                                             "box")


# ---------------------------------------------------------------- TF Serving parity


@pytest.mark.parametrize("body, words", [
    ({"signature_name": "no_such_sig", "instances": [b64(png_bytes())]},
     'Serving signature name: "no_such_sig" not found'),
    ({"instances": [b64(png_bytes())], "inputs": [b64(png_bytes())]}, "only one of"),
])
def test_requests_tf_serving_refuses_are_400(classifier, body, words):
    assert words in error_of(client_for(classifier).post(PREDICT, json=body), 400)


def test_the_versioned_paths_answer_as_tf_servings(classifier):
    client = client_for(classifier)
    body = {"signature_name": "serving_default", "instances": [b64(png_bytes())]}
    versioned = client.post("/v1/models/catsdogs/versions/1:predict", json=body)
    assert versioned.status_code == 200 and len(versioned.json()["predictions"]) == 1
    assert client.get("/v1/models/catsdogs/versions/1").json()["model_version_status"][0][
        "state"] == "AVAILABLE"
    missing = client.post("/v1/models/catsdogs/versions/2:predict", json=body)
    assert error_of(missing, 404) == "Servable not found for request: Specific(catsdogs, 2)"
    text = client.get("/metrics").text
    assert metric(text, "catsdogs_requests_total", code="200", endpoint="predict") == 1
    meta = client.get("/v1/models/catsdogs/versions/1/metadata").json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image_bytes"] == {
        "dtype": "DT_STRING", "name": "serving_default_image_bytes:0",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}
    assert [d["size"] for d in signature["outputs"]["probabilities"]["tensor_shape"]["dim"]] \
        == ["-1", "2"]


# ---------------------------------------------------------------- flag values


@pytest.mark.parametrize("flag, value", [
    ("--batch-wait-ms", "nan"), ("--max-upload-mb", "inf"), ("--max-upload-mb", "-1"),
    ("--max-inflight-mb", "nan"), ("--drain-seconds", "-inf"), ("--header-timeout", "0"),
    ("--body-timeout", "inf"), ("--idle-timeout", "-2"), ("--max-batch", "0"),
])
def test_nonsense_flag_values_are_one_error_line_naming_the_flag(capsys, flag, value):
    line = one_error_line(capsys, serve_main, ["no-such-run", f"{flag}={value}"])
    assert f"bad value for {flag}" in line and value.lstrip("-") in line


# ---------------------------------------------------------------- a real server: timeouts


TIMEOUT = 1.0  # each of --header-timeout, --body-timeout, --idle-timeout in the server below


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    """A `catsdogs serve` process with 1 s timeouts: (port, its stderr file)."""
    port = free_port()
    stderr = tmp_path_factory.mktemp("server") / "stderr.txt"
    with open(stderr, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "catsdogs", "serve", str(run_dir), "--port", str(port),
             "--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT),
             "--idle-timeout", str(TIMEOUT), "--max-batch", "4"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"the server did not start: {stderr.read_text()[-2000:]}")
        yield port, stderr
    finally:
        process.terminate()
        process.wait(timeout=30)


def closed_after(connection, seconds):
    """Seconds until the server closed `connection` (reads until EOF), or None past `seconds`;
    also what it sent."""
    connection.settimeout(seconds)
    started, received = time.monotonic(), b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (socket.timeout, TimeoutError):
        return None, received
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


def test_a_header_dribbled_past_the_header_timeout_is_closed(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a header
        waited, received = closed_after(connection, 5 * TIMEOUT)
    assert waited is not None and waited < 3 * TIMEOUT and received == b""


def test_pipelined_requests_are_all_answered_in_order_on_one_connection(server):
    """The parser reads both requests at once; the second waits for the first's answer, and
    the header deadline is not armed while it waits (its headers are in)."""
    port, _ = server
    request = b"GET /v1/models/catsdogs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(request + b"\r\n" + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Connection: close\r\n\r\n")
        waited, received = closed_after(connection, 5 * TIMEOUT)
    assert waited is not None and received.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert received.index(b"model_version_status") < received.rindex(b"HTTP/1.1 200 OK")


def answers_until_closed(port, data, seconds=5.0):
    """(status codes in order, the bytes) the server sent on one connection for `data`, read
    until it closed the connection (None for the codes if it had not within `seconds`)."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(data)
        waited, received = closed_after(connection, seconds)
    statuses = [int(line.split()[1]) for line in received.split(b"\r\n")
                if line.startswith(b"HTTP/1.1 ")]
    return (statuses if waited is not None else None), received


def test_headers_over_16_kib_get_431_and_the_connection_is_closed(server):
    port, _ = server
    statuses, received = answers_until_closed(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                              + b"X-Filler: " + b"a" * 20_000 + b"\r\n\r\n")
    assert statuses == [431]
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"].startswith("request refused")


def test_a_header_line_that_never_ends_gets_431(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
        sent = 0
        try:
            while sent < 2_000_000:  # in separate reads, as a slow client's would arrive
                connection.sendall(b"a" * 8192)
                sent += 8192
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        waited, received = closed_after(connection, 5)
    assert sent < 2_000_000 and b" 431 " in received.split(b"\r\n", 1)[0]


def test_many_tiny_headers_count_for_the_memory_they_hold(server):
    port, _ = server
    statuses, _ = answers_until_closed(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       + b"a:\r\n" * 1000 + b"\r\n")
    assert statuses == [431]


def test_a_bad_chunk_in_a_requests_own_body_is_refused_at_once(server):
    port, _ = server
    started = time.monotonic()
    statuses, _ = answers_until_closed(
        port, b"POST /v1/models/catsdogs:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n")
    assert statuses == [400] and time.monotonic() - started < 3


def test_a_deep_pipeline_gets_the_first_requests_answered_then_the_connection_closed(server):
    port, _ = server
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    statuses, _ = answers_until_closed(port, request * 200)
    assert statuses is not None and 1 <= len(statuses) <= 9 and set(statuses) == {200}
    assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_garbage_behind_a_request_does_not_overtake_its_answer(server):
    port, _ = server
    statuses, _ = answers_until_closed(
        port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\x16\x03\x01 no HTTP\r\n\r\n")
    assert statuses == [200]


def test_an_upgrade_request_is_answered_then_its_connection_closed(server):
    port, _ = server
    statuses, _ = answers_until_closed(
        port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
              b"Upgrade: h2c\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert statuses == [200]


def test_half_open_connections_are_all_closed_by_the_header_timeout(server):
    port, _ = server
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        time.sleep(3 * TIMEOUT)
        still_open = 0
        for connection in connections:
            waited, _ = closed_after(connection, 0.2)
            still_open += waited is None
    finally:
        for connection in connections:
            connection.close()
    assert still_open == 0
    assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_a_body_dribbled_past_the_body_timeout_gets_408_and_is_closed(server):
    port, _ = server
    body = json.dumps({"instances": [b64(png_bytes())]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: " +
                           str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        waited, received = closed_after(connection, 5 * TIMEOUT)
    assert waited is not None and waited < 3 * TIMEOUT
    assert received.startswith(b"HTTP/1.1 408 ")
    assert json.loads(received.split(b"\r\n\r\n", 1)[1]) == {
        "error": f"request body not received within {TIMEOUT:g} s"}


def test_a_body_refused_before_it_is_read_gets_its_answer_and_a_close_not_a_reset(server):
    """413 comes before the body is read; the server closes as nginx does (lingering.py): the
    answer, a FIN, what the client still sends read and dropped. Closing with the body unread
    would reset the connection: the client's next send or read fails, its answer may be lost."""
    port, _ = server
    request = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 30000000\r\n"
               b"Connection: close\r\n\r\n"  # so the server closes after its answer
               + b"x" * 3_000_000)  # as a client sends: all of it, without waiting
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.settimeout(10)
        sending = threading.Thread(target=connection.sendall, args=(request,), daemon=True)
        sending.start()
        received = b""
        while chunk := connection.recv(65536):  # a reset raises ConnectionResetError here
            received += chunk
        sending.join(10)
    status, _, body = raw_answer(received)
    assert status == 413 and json.loads(body) == {"error": "request body over 20,000,000 bytes"}


def test_a_lingering_connection_is_closed_after_its_linger_even_if_the_client_keeps_sending(
        server):
    """The lingering close is bounded: a client that goes on sending a body the server
    refused is cut off LINGER_SECONDS after the answer, not read for ever."""
    from catsdogs.serve.lingering import LINGER_SECONDS

    port, _ = server
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 30000000\r\n"
            b"Connection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head)
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5 * LINGER_SECONDS:
                connection.sendall(b"x" * 4096)  # fails once the server has closed
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        cut_after = time.monotonic() - started
    assert cut_after < 3 * LINGER_SECONDS


def test_an_idle_keep_alive_connection_is_closed_by_the_idle_timeout(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        waited, received = closed_after(connection, 5 * TIMEOUT)
    assert received.startswith(b"HTTP/1.1 200 ") and b'{"status":"ok"}' in received
    assert waited is not None and waited < 3 * TIMEOUT


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(server):
    port, stderr = server
    base = f"http://127.0.0.1:{port}"
    before = metric(httpx2.get(base + "/metrics", timeout=5).text, "catsdogs_requests_total",
                    code="499", endpoint="predict") or 0  # a refusal mid-body counts there too
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                           b'{"instances": [')
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while metric(httpx2.get(base + "/metrics", timeout=5).text, "catsdogs_requests_total",
                 code="499", endpoint="predict") != before + 1:
        assert time.monotonic() < deadline, "the hang-up was not counted"
        time.sleep(0.1)
    assert "Traceback" not in stderr.read_text()
    answer = httpx2.post(base + PREDICT, json={"instances": [b64(png_bytes())]}, timeout=30)
    assert answer.status_code == 200


# ---------------------------------------------------------------- uvicorn's own answers


@contextlib.contextmanager
def running(classifier, **settings):
    """The uvicorn server `catsdogs serve` runs, serving create_app(classifier,
    ServeConfig(**settings)) from a thread on 127.0.0.1: yields its port."""
    config = ServeConfig(port=free_port(), drain_seconds=5, **settings)
    with serving_in_a_thread(classifier, config):
        yield config.port


def raw_answer(received):
    """(status, lower-cased headers, body) of one HTTP/1.1 answer read to the close."""
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def test_a_malformed_request_gets_uvicorns_400_in_the_servers_error_shape(classifier):
    with running(classifier) as port, socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"\x16\x03\x01\x02\x00 this is no HTTP\r\n\r\n")  # a TLS hello's start
        waited, received = closed_after(raw, 10)
    status, headers, body = raw_answer(received)
    assert waited is not None and status == 400 and headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"error"}
    assert json.loads(body)["error"].startswith("malformed HTTP request: ")


def test_a_request_past_max_connections_gets_503_json_with_retry_after(classifier):
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with running(classifier, max_connections=2) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx2.Client() as keeps_one_open:  # kept alive in its pool: one connection held
            assert keeps_one_open.get(base + "/healthz").status_code == 200
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(request)
                waited, received = closed_after(raw, 10)
        assert httpx2.get(base + "/healthz").status_code == 200  # the slot came back
    status, headers, body = raw_answer(received)
    assert waited is not None and status == 503 and headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "over capacity: 2 connections or requests at once"}


# ---------------------------------------------------------------- a port another program holds
# catsdogs binds the port itself, before the model loads (serve/ports.py): one `error:` line
# naming --port, exit 2, nothing served or printed before it


@contextlib.contextmanager
def held_port():
    """A port on 127.0.0.1 that a plain socket listens on (as `python -m http.server` would)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def test_a_port_in_use_is_one_error_line_naming_port_and_nothing_on_stdout(capsys, run_dir):
    with held_port() as port:
        code = serve_main([str(run_dir), "--port", str(port)])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == "", captured.out  # no "Serving ..." before the error
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, lines
    assert lines[0] == (f"error: port {port} on 127.0.0.1 is in use (--port): stop what holds "
                        f"it or pass another --port"), lines


@pytest.mark.parametrize("workers", [1, 2])
def test_the_port_is_checked_before_anything_is_served(workers):
    from catsdogs.serve.ports import reserve
    from catsdogs.serve.workers import bind

    with held_port() as port:
        with pytest.raises(CatsDogsError) as raised:
            if workers == 1:
                reserve(ServeConfig(port=port))
            else:
                bind("127.0.0.1", port, listen=False)
    assert raised.value.where == "--port" and str(port) in str(raised.value)


def test_a_reserved_port_is_held_until_closed():
    from catsdogs.serve.ports import reserve

    with held_port() as port:
        pass  # free again
    with reserve(ServeConfig(port=port)):
        with pytest.raises(CatsDogsError):  # held: no second server on it
            reserve(ServeConfig(port=port))
    reserve(ServeConfig(port=port)).close()  # closed: free
