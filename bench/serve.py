"""Images/s and latency of `catsdogs serve` with dynamic batching vs one request at a time.

    python bench/serve.py [--requests 2000] [--clients 16] [--preset seed-catsdogs] [--ceiling-only]

Starts `python -m catsdogs serve` on 127.0.0.1 (a free port) twice, with `--max-batch 32`
(batching) and `--max-batch 1` (every request its own model call), and sends each the same
bounded load: --requests POSTs to /v1/models/catsdogs:predict, one photo each (JSON with
base64, as TF Serving clients send), from --clients concurrent clients, after 20 warm-up
requests. First, in this process, the model alone as the server calls it, one image a call and
32 a call: their ratio is the ceiling of what batching can gain on this machine. The model is
an untrained preset (speed does not depend on the weights); the photos
are ../shared/data/cats_and_dogs/validation. Prints images/s, p50/p95/p99 latency, errors and
the ratio. Loopback only; every loop is bounded in count and time.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catsdogs  # noqa: E402
from machine import describe, shared_data  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir, port, max_batch):
    process = subprocess.Popen(
        [sys.executable, "-m", "catsdogs", "serve", str(model_dir), "--port", str(port),
         "--max-batch", str(max_batch), "--quiet"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    sys.exit("bench: the server did not start within 120 s")


def load(port, bodies, requests, clients):
    """Send `requests` POSTs from `clients` threads; (latencies in s, errors, wall seconds)."""
    import httpx

    url = f"http://127.0.0.1:{port}/v1/models/catsdogs:predict"
    latencies, errors, lock = [], [0], threading.Lock()
    counter = iter(range(requests))

    def client():
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                response = http.post(url, content=bodies[index % len(bodies)],
                                     headers={"content-type": "application/json"})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    errors[0] += response.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return np.array(latencies), errors[0], time.perf_counter() - started


def model_ceiling(model_path, photos, max_batch=32, rounds=3):
    """Images/s of the served model alone, called as the server calls it
    (`Classifier.probabilities`), one image per call and `max_batch` per call, best of
    `rounds`: their ratio bounds what dynamic batching can gain on this machine, whatever the
    HTTP stack costs."""
    from catsdogs.data.images import decode_image

    classifier = catsdogs.load(model_path)
    pixels = np.stack([decode_image(p, classifier.image_size) for p in photos[:max_batch]])
    pixels = pixels.astype(np.float32)
    classifier.probabilities(pixels)  # warm-up: tracing for both shapes
    classifier.probabilities(pixels[:1])

    def rate(batch):
        best = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            for start in range(0, len(pixels), batch):
                classifier.probabilities(pixels[start:start + batch])
            best = max(best, len(pixels) / (time.perf_counter() - started))
        return best

    return rate(1), rate(max_batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--preset", default="seed-catsdogs")
    parser.add_argument("--ceiling-only", action="store_true",
                        help="measure the model alone (the ceiling) and skip the HTTP load")
    args = parser.parse_args()
    photos = sorted(shared_data("cats_and_dogs", "validation").rglob("*.jpg"))[:200]
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()}]}).encode()
              for p in photos]
    print(describe())
    from catsdogs.models.presets import get_preset

    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder)
        get_preset(args.preset).build(2).save(model_dir / "model.keras")
        (model_dir / "class_names.json").write_text('["cats", "dogs"]')
        single, batched = model_ceiling(model_dir / "model.keras", photos)
        print(f"the model alone, 1 image a call{single:>14.1f} images/s\n"
              f"the model alone, 32 images a call{batched:>12.1f} images/s   "
              f"{batched / single:.2f}x: the most batching can gain here ({args.preset})",
              flush=True)
        if args.ceiling_only:
            return
        results = {}
        for label, max_batch in (("one at a time (--max-batch 1)", 1),
                                 ("dynamic batching (--max-batch 32)", 32)):
            port = free_port()
            server = start_server(model_dir / "model.keras", port, max_batch)
            try:
                load(port, bodies, 20, args.clients)  # warm-up: graph tracing, allocation
                latencies, errors, seconds = load(port, bodies, args.requests, args.clients)
            finally:
                server.terminate()
                server.wait(timeout=30)
            rate = len(latencies) / seconds
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
            results[label] = rate
            print(f"{label:<36}{rate:>8.1f} images/s   p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  "
                  f"p99 {p99:6.0f} ms  errors {errors}  ({len(latencies)} requests, "
                  f"{args.clients} clients, {args.preset})", flush=True)
        baseline, batched = results.values()
        print(f"dynamic batching: {batched / baseline:.2f}x the one-at-a-time images/s")


if __name__ == "__main__":
    main()
