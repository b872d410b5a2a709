"""catsdogs serve under load: shedding past the bounds (503 + Retry-After, counted), bodies
refused before they are read whole, and a drain on SIGTERM that answers every admitted request.

Loopback only; every request count is fixed and every wait has a deadline."""

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from PIL import Image

import catsdogs
from catsdogs.serve.app import ServeConfig, create_app
from catsdogs.serve.memory import process_memory

from conftest import REPO, TWO_CLASSES, free_port, serving_in_a_thread, write_class_images

PREDICT = "/v1/models/catsdogs:predict"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny seed-cifar10 model trained for one epoch on generated 32x32 images."""
    from catsdogs.commands.train import main

    root = tmp_path_factory.mktemp("load")
    write_class_images(root / "images" / "train", TWO_CLASSES, 8, size=(32, 32), seed=1)
    write_class_images(root / "images" / "validation", TWO_CLASSES, 4, size=(32, 32), seed=2)
    run = root / "run"
    assert main(["--data", str(root / "images"), "--preset", "seed-cifar10", "--epochs", "1",
                 "--run-dir", str(run), "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def classifier(trained_run):
    return catsdogs.load(trained_run)


def photo_body():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), (180, 90, 40)).save(buffer, "PNG")
    return {"instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]}


async def _send_all(app, requests):
    """Send (method, path, kwargs) requests at once to the ASGI app; their responses."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
        return await asyncio.gather(*(http.request(method, path, **kwargs)
                                      for method, path, kwargs in requests))


def metric(text, name, **labels):
    """A sample's value from Prometheus text, or None when absent."""
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def test_a_burst_past_the_queue_bound_gets_503_with_retry_after_and_the_rest_200(classifier):
    # the first request's batch waits 0.3 s for company: both admitted ones are held that long,
    # while the burst's other six arrive
    app = create_app(classifier, ServeConfig(max_queue=2, max_batch=64, batch_wait_ms=300))
    burst = [("POST", PREDICT, {"json": photo_body()})] * 8
    responses = asyncio.run(_send_all(app, burst))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 2 + [503] * 6
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert all("over capacity: 2 requests" in r.json()["error"] for r in shed)
    again, = asyncio.run(_send_all(app, [("POST", PREDICT, {"json": photo_body()})]))
    assert again.status_code == 200  # the slots came back
    text = asyncio.run(_send_all(app, [("GET", "/metrics", {})]))[0].text
    assert metric(text, "catsdogs_shed_requests_total", reason="queue") == 6
    assert metric(text, "catsdogs_requests_total", code="503", endpoint="predict") == 6
    assert metric(text, "catsdogs_admitted_requests") == 0
    assert metric(text, "catsdogs_inflight_bytes") == 0


def test_request_bytes_in_flight_are_bounded(classifier):
    noise = Image.effect_noise((200, 200), 60).convert("RGB")  # ~100 kB: far over its pixels
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    body = json.dumps({"instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]})
    body = body.encode()
    app = create_app(classifier, ServeConfig(max_upload_mb=len(body) / 1e6,
                                             max_inflight_mb=len(body) * 1.5 / 1e6,
                                             max_batch=64, batch_wait_ms=300))
    send = ("POST", PREDICT, {"content": body, "headers": {"content-type": "application/json"}})
    first, second = asyncio.run(_send_all(app, [send, send]))
    assert sorted([first.status_code, second.status_code]) == [200, 503]
    refused = first if first.status_code == 503 else second
    assert "request bytes already in flight" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    text = asyncio.run(_send_all(app, [("GET", "/metrics", {})]))[0].text
    assert metric(text, "catsdogs_shed_requests_total", reason="bytes") == 1


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(classifier):
    app = create_app(classifier, ServeConfig(max_upload_mb=0.2))
    chunk, chunks, consumed = b"x" * 10_000, 100, [0]

    async def body():  # no Content-Length: the server only learns the size as it reads
        for _ in range(chunks):
            consumed[0] += len(chunk)
            yield chunk

    response, = asyncio.run(_send_all(app, [("POST", PREDICT, {"content": body()})]))
    assert response.status_code == 413 and "over 200,000 bytes" in response.json()["error"]
    assert consumed[0] <= 200_000 + len(chunk) < len(chunk) * chunks


def test_draining_turns_readiness_unavailable_and_sheds_new_requests(classifier):
    from fastapi.testclient import TestClient

    app = create_app(classifier)
    client = TestClient(app)
    assert client.get("/v1/models/catsdogs").json()["model_version_status"][0]["state"] == \
        "AVAILABLE"
    app.state.gate.draining = True
    status = client.get("/v1/models/catsdogs")
    assert status.status_code == 503
    state = status.json()["model_version_status"][0]
    assert state["state"] == "UNLOADING" and state["status"]["error_code"] == "UNAVAILABLE"
    refused = client.post(PREDICT, json=photo_body())
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    assert metric(client.get("/metrics").text, "catsdogs_shed_requests_total",
                  reason="draining") == 1


# ---------------------------------------------------------------- a real server process


def wait_until(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def children(pid):
    """The pids of a process's children (Linux /proc)."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


@contextlib.contextmanager
def running_server(run, port, output, *flags):
    """`catsdogs serve RUN` in a process, its stdout and stderr in the file `output`, once it
    has printed its start lines (every worker ready); killed at the end if still running."""
    with open(output, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "catsdogs", "serve", str(run), "--port", str(port), *flags],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "memory bound" in output.read_text(), 120, "the start lines")
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def answered_through_a_drain(server, port, requests, drain_seconds):
    """Send `requests` predictions that a batch wait holds, SIGTERM the server once /metrics
    counts them all admitted; (responses, exit code, seconds to exit, peak RSS of the server's
    processes together)."""
    base = f"http://127.0.0.1:{port}"
    responses = []

    def send():
        try:
            responses.append(httpx2.post(base + PREDICT, json=photo_body(), timeout=60))
        except httpx2.HTTPError as error:
            responses.append(error)

    clients = [threading.Thread(target=send) for _ in range(requests)]
    for client in clients:
        client.start()
    wait_until(lambda: metric(httpx2.get(base + "/metrics", timeout=5).text,
                              "catsdogs_admitted_requests") == requests, 30,
               f"{requests} requests admitted")
    peak = sum(process_memory(pid)["VmHWM"] for pid in [server.pid, *children(server.pid)])
    server.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = server.wait(timeout=drain_seconds + 15)
    drained_in = time.monotonic() - signalled
    for client in clients:
        client.join(timeout=30)
    return responses, code, drained_in, peak


def assert_drained(output, outcome, requests, drain_seconds):
    responses, code, drained_in, peak = outcome
    assert code == 0 and drained_in < drain_seconds
    assert [getattr(r, "status_code", r) for r in responses] == [200] * requests
    assert all(len(r.json()["predictions"]) == 1 for r in responses)
    bound_mb = re.search(r"memory bound: peak RSS under (\d+) MB", output.read_text())
    assert bound_mb and peak < int(bound_mb.group(1)) * 1e6


# a batch waits 2 s for company: the requests are held, admitted, when SIGTERM comes
HOLDING = ("--max-batch", "64", "--batch-wait-ms", "2000")


def test_sigterm_with_requests_in_flight_answers_all_of_them_then_exits_0(trained_run, tmp_path):
    port, requests, drain_seconds, output = free_port(), 12, 20, tmp_path / "output.txt"
    with running_server(trained_run, port, output, *HOLDING, "--drain-seconds",
                        str(drain_seconds)) as server:
        outcome = answered_through_a_drain(server, port, requests, drain_seconds)
    assert_drained(output, outcome, requests, drain_seconds)


@pytest.mark.slow
def test_workers_share_the_port_and_metrics_replace_a_dead_one_and_drain_together(
        trained_run, tmp_path):
    """--workers 2: a worker killed is replaced; /metrics adds up the processes (the requests
    admitted are counted wherever they wait); SIGTERM drains both, every request answered,
    exit 0, and the processes together stay under the bound printed."""
    port, requests, drain_seconds, output = free_port(), 12, 20, tmp_path / "output.txt"
    with running_server(trained_run, port, output, *HOLDING, "--drain-seconds",
                        str(drain_seconds), "--workers", "2") as server:
        first = children(server.pid)
        assert len(first) >= 2  # the workers (and multiprocessing's resource tracker, if any)
        workers = [pid for pid in first if b"from multiprocessing.spawn" in
                   Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: "is ready" in output.read_text(), 120, "a replacement worker ready")
        assert len(set(children(server.pid)) - set(first)) == 1
        outcome = answered_through_a_drain(server, port, requests, drain_seconds)
    assert_drained(output, outcome, requests, drain_seconds)
    assert output.read_text().count("draining: ") == 2  # each worker drained


def read_answer(connection, seconds=10):
    """(status, lower-cased headers, body) of one HTTP/1.1 answer with a Content-Length, and
    whether the server then closed the connection (b"" within `seconds`)."""
    connection.settimeout(seconds)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"closed before an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    try:
        closed = connection.recv(1) == b""
    except (socket.timeout, TimeoutError):
        closed = False
    return int(status_line.split()[1]), headers, body, closed


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_requests_on_their_way_when_the_drain_begins_are_answered_not_cut(classifier):
    """uvicorn's own shutdown closes at once every connection with no request in progress: one
    accepted whose request is not read yet, an idle keep-alive one whose next request is on
    the wire. Here they are answered (503: draining) and closed after the answer."""
    config = ServeConfig(port=free_port(), drain_seconds=10)
    port = config.port
    body = json.dumps(photo_body()).encode()
    predict = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with serving_in_a_thread(classifier, config) as (server, thread):
        server.config.http.drain_grace = 5.0  # room for this test's thread on a loaded machine
        fresh = socket.create_connection(("127.0.0.1", port))  # accepted; nothing sent yet
        kept = socket.create_connection(("127.0.0.1", port))  # one answer, then kept alive
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(kept, 0.5)[::3] == (200, False)
        wait_until(lambda: len(server.server_state.connections) == 2, 10, "both accepted")
        server.handle_exit(signal.SIGTERM, None)
        wait_until(lambda: refuses(port), 10, "the listener closed")  # the drain has begun
        fresh.sendall(predict)
        kept.sendall(predict)
        answers = [read_answer(connection) for connection in (fresh, kept)]
        thread.join(timeout=30)
    for status, headers, body, closed in answers:
        assert status == 503 and headers["retry-after"] == "1" and closed
        assert "shutting down" in json.loads(body)["error"]
    assert not thread.is_alive()


def test_workers_share_the_bounds_each_holding_at_least_one_largest_body():
    whole = ServeConfig(workers=2, max_batch=32, max_inflight_mb=64, max_connections=999)
    share = whole.per_worker()
    assert (share.workers, share.queue_limit, share.max_inflight_mb, share.max_connections) == \
        (1, 16, 32, 500)
    assert ServeConfig(workers=3, max_queue=7).per_worker().queue_limit == 3  # never 0: rounded up
    assert ServeConfig(workers=8).per_worker().max_inflight_mb == 20  # one --max-upload-mb body
    assert ServeConfig().per_worker() == ServeConfig()


def test_a_taken_port_is_one_line_before_any_worker_starts():
    from catsdogs.errors import CatsDogsError
    from catsdogs.serve.workers import bind

    with socket.create_server(("127.0.0.1", 0)) as taken:  # held without SO_REUSEPORT
        with pytest.raises(CatsDogsError,
                           match=r"port \d+ on 127.0.0.1 is in use \(--port\): .*another --port"):
            bind("127.0.0.1", taken.getsockname()[1], listen=False)
    # another catsdogs server's worker (SO_REUSEPORT): joining it would split its clients
    with socket.create_server(("127.0.0.1", 0), reuse_port=True) as taken:
        with pytest.raises(CatsDogsError, match=r"is in use \(--port\)"):
            bind("127.0.0.1", taken.getsockname()[1], listen=False)


def test_a_metrics_folder_holding_an_earlier_servers_files_is_refused(tmp_path, monkeypatch):
    from catsdogs.errors import CatsDogsError
    from catsdogs.serve.workers import metrics_folder

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with metrics_folder() as folder:  # empty: used as it is
        assert folder == str(tmp_path)
    (tmp_path / "counter_123.db").write_bytes(b"")
    with pytest.raises(CatsDogsError, match="earlier server"), metrics_folder():
        pass
    assert (tmp_path / "counter_123.db").exists()  # the user's folder is left as it is
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(CatsDogsError, match="names no folder"), metrics_folder():
        pass


def test_a_worker_that_cannot_load_the_model_is_the_servers_one_error_line(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    result = subprocess.run(
        [sys.executable, "-m", "catsdogs", "serve", str(tmp_path), "--port", str(free_port()),
         "--workers", "2"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "model.keras" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1, lines  # not one a worker
    assert "Traceback" not in result.stderr
