"""Images/s and latency of `catsdogs serve` with dynamic batching vs one request at a time.

    python bench/serve.py [--requests 2000] [--clients 16] [--preset seed-catsdogs] [--ceiling-only]
    python bench/serve.py --profile            # where one request's CPU goes, stage by stage
    python bench/serve.py --soak 0.5           # a bounded overload, then a drain
    python bench/serve.py --workers 1 2 --rounds 2   # one server process against two, alternating

Starts `python -m catsdogs serve` on 127.0.0.1 (a free port) twice, with `--max-batch 32`
(batching) and `--max-batch 1` (every request its own model call), and sends each the same
bounded load: --requests POSTs to /v1/models/catsdogs:predict, one photo each (JSON with
base64, as TF Serving clients send), from --clients concurrent clients (`--client raw`: keep-
alive connections speaking raw HTTP/1.1, cheap in CPU as wrk is; `httpx`: a thread per client
on httpx2, httpx's maintained fork with its API, as measured before 2026-12-04 on httpx), after
20 warm-up requests. First, in this process, the model alone as the server calls it, one image
a call and 32 a call: their ratio is the ceiling of what batching can gain on this machine.
The model is an untrained preset (speed does not depend on the weights); the photos are the
preset's task's own:
../shared/data/cats_and_dogs/validation, or CIFAR-10's test images (32x32) for a 10-class
preset (before 2026-12-04 every preset got the cats/dogs photos). Prints images/s, p50/p95/p99
latency, errors, the ratio, and the share of the model-alone ceiling (32 a call) that the
batching server keeps; per arm, the CPU milliseconds a request costs the server (and its event
loop's thread alone, from /proc) and the client, beside the model's own per image. Loopback
only; every loop is bounded in count and time.

--profile times each stage of one :predict request in this process (JSON, base64, decode,
model alone and batched, answer) and whole requests through the app without a network.
--soak MINUTES starts one server with its default bounds, measures what it sustains (8
clients, closed loop), then offers 2.5x that, open loop, for MINUTES (a fixed request count):
answered, shed (503/429) and failed, p50/p99 of the answered, the server's peak RSS
(/proc VmHWM, VmRSS sampled) against the bound it printed; then SIGTERM with requests in flight.
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


def task_photos(preset, count=200):
    """(photo paths, class names) of the preset's own task, as its clients would send them:
    CIFAR-10's 32x32 test images for a 10-class preset, cats/dogs photos otherwise."""
    if preset.listed_classes == 10:
        test = shared_data("cifar10", "test")
        names = sorted(folder.name for folder in test.iterdir() if folder.is_dir())
        return sorted(test.rglob("*.jpg"))[::50][:count], names
    return sorted(shared_data("cats_and_dogs", "validation").rglob("*.jpg"))[:count], ["cats", "dogs"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir, port, max_batch, stdout, max_queue=None, workers=1):
    """`catsdogs serve` in a process, once it printed its start lines to the file `stdout`
    (every worker ready), which it keeps writing."""
    process = subprocess.Popen(
        [sys.executable, "-m", "catsdogs", "serve", str(model_dir), "--port", str(port),
         "--max-batch", str(max_batch), "--workers", str(workers), "--quiet",
         *(["--max-queue", str(max_queue)] if max_queue else [])], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=stdout)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if b"memory bound" in os.pread(stdout.fileno(), 1 << 16, 0):  # the file's offset kept
            return process
        time.sleep(0.2)
    process.kill()
    sys.exit("bench: the server did not start within 180 s")


def load(port, bodies, requests, clients):
    """Send `requests` POSTs from `clients` threads; (latencies in s, errors, wall seconds)."""
    import httpx2

    url = f"http://127.0.0.1:{port}/v1/models/catsdogs:predict"
    latencies, errors, lock = [], [0], threading.Lock()
    counter = iter(range(requests))

    def client():
        with httpx2.Client(timeout=60) as http:
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


def load_raw(port, bodies, requests, clients):
    """`load` from `clients` keep-alive connections speaking raw HTTP/1.1 on asyncio streams,
    as wrk does, not httpx: the load generator shares the server's cores here, and a client
    that costs little CPU leaves them to the server. Same return value as `load`."""
    import asyncio

    heads = [f"POST /v1/models/catsdogs:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
             + body for body in bodies]
    latencies, errors = [], [0]
    counter = iter(range(requests))

    async def exchange(reader, writer, request):
        """(status, whether the server keeps the connection) of one request."""
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        length, keep = 0, True
        while (line := (await reader.readline()).lower()) not in (b"\r\n", b""):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            keep = keep and line.strip() != b"connection: close"
        await reader.readexactly(length)
        return status, keep

    async def client():
        connection = None
        for index in counter:  # shared: each request is taken by one client
            started = time.perf_counter()
            try:
                connection = connection or await asyncio.open_connection("127.0.0.1", port)
                status, keep = await asyncio.wait_for(
                    exchange(*connection, heads[index % len(heads)]), 60)
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError,
                    asyncio.TimeoutError):
                status, keep = None, False  # closed or garbled: an error, and a new connection
            latencies.append(time.perf_counter() - started)
            errors[0] += status != 200
            if not keep and connection is not None:
                connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    async def run():
        await asyncio.gather(*(client() for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(run())
    return np.array(latencies), errors[0], time.perf_counter() - started


CLIENTS = {"raw": load_raw, "httpx": load}


def server_pids(pid):
    """The server's processes: `pid` and its children (--workers: the workers; Linux /proc)."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [pid, *(int(child) for child in listing.read().split())]


def cpu_seconds(pids, main_threads=False):
    """CPU seconds (user + system) the processes `pids` have used so far, or their main
    threads alone (each process's event loop)."""
    total = 0.0
    for pid in pids:
        path = f"/proc/{pid}/task/{pid}/stat" if main_threads else f"/proc/{pid}/stat"
        with open(path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measured(send, port, bodies, requests, clients, pid):
    """`send`'s results, and the CPU milliseconds per request of the server (all its
    processes), of their main threads (the event loops: HTTP, routing, JSON answers) and of
    this process (the client)."""
    pids = server_pids(pid)
    server, loop, client = cpu_seconds(pids), cpu_seconds(pids, True), time.process_time()
    latencies, errors, seconds = send(port, bodies, requests, clients)
    count = max(1, len(latencies)) / 1000
    return latencies, errors, seconds, {
        "server": (cpu_seconds(pids) - server) / count,
        "loop": (cpu_seconds(pids, True) - loop) / count,
        "client": (time.process_time() - client) / count}


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

    cpu = {}

    def rate(batch):
        best = 0.0
        for _ in range(rounds):
            started, used = time.perf_counter(), time.process_time()
            for start in range(0, len(pixels), batch):
                classifier.probabilities(pixels[start:start + batch])
            best = max(best, len(pixels) / (time.perf_counter() - started))
            cpu[batch] = min(cpu.get(batch, np.inf),
                             (time.process_time() - used) / len(pixels) * 1000)
        return best

    single, batched = rate(1), rate(max_batch)
    return single, batched, cpu[max_batch]


def profile(model_path, bodies, rounds=50):
    """Milliseconds per request of each stage the server runs for one photo, best of rounds
    after a warm-up, and a whole request through the ASGI app (no network)."""
    import asyncio

    import httpx2

    from catsdogs.data.images import decode_image
    from catsdogs.serve.app import ServeConfig, _instances, _row, create_app

    classifier = catsdogs.load(model_path)
    body = bodies[0]
    parsed = json.loads(body)
    data = base64.b64decode(parsed["instances"][0]["b64"])
    pixels = decode_image("photo", classifier.image_size, data)[None]
    batch = np.repeat(pixels, 32, axis=0)
    rows = [_row(p, classifier.class_names, None) for p in classifier.probabilities(pixels)]
    stages = {
        "JSON parse (json.loads)": lambda: json.loads(body),
        "base64 decode": lambda: _instances(parsed, 64),
        "image decode + resize (Pillow)": lambda: decode_image("photo", classifier.image_size,
                                                               data),
        "model, 1 image a call": lambda: classifier.probabilities(pixels),
        "model, per image in a call of 32": lambda: classifier.probabilities(batch),
        "answer (rows + JSON encode)": lambda: json.dumps({"predictions": rows}),
    }
    print(f"one request's stages ({len(body) / 1e3:.0f} kB body, best of {rounds}):")
    for name, stage in stages.items():
        stage()
        best = min(_timed(stage) for _ in range(rounds)) * 1000
        best /= 32 if "of 32" in name else 1
        print(f"  {name:<36}{best:8.2f} ms")
    app = create_app(classifier, ServeConfig())

    async def sequential(count):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://x") as http:
            started = time.perf_counter()
            for index in range(count):
                await http.post("/v1/models/catsdogs:predict", content=bodies[index % len(bodies)],
                                headers={"content-type": "application/json"})
            return (time.perf_counter() - started) / count

    asyncio.run(sequential(5))
    whole = asyncio.run(sequential(rounds)) * 1000
    print(f"  {'whole request through the app':<36}{whole:8.2f} ms  (one at a time, no network;"
          f" includes the {ServeConfig().batching.max_wait * 1000:g} ms batch wait)")


def _timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


class MemorySampler(threading.Thread):
    """The server's VmRSS every `every` seconds until stopped, and VmHWM (each process's own
    peak), both summed over its processes (--workers: the parent and the workers)."""

    def __init__(self, pid, every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.hwm = pid, every, 0, 0
        self.done = threading.Event()

    def run(self):
        from catsdogs.serve.memory import process_memory

        while not self.done.wait(self.every):
            try:
                memory = [process_memory(pid) for pid in server_pids(self.pid)]
            except OSError:
                return
            if not all("VmRSS" in each for each in memory):  # exiting, not yet reaped
                return
            self.peak = max(self.peak, sum(each["VmRSS"] for each in memory))
            self.hwm = sum(each["VmHWM"] for each in memory)

    def stop(self):
        self.done.set()
        self.join(timeout=5)


def open_loop(port, bodies, rate, seconds, timeout=30.0):
    """Send rate x seconds requests at a fixed rate, whatever the answers' pace (as many
    clients do), each on its own connection with a total timeout: ({status, "refused" or
    "failed": count}, answered latencies). Raw HTTP/1.1 on asyncio streams, not httpx: a
    client that costs little CPU, so the server, not the client, is what gets overloaded."""
    import asyncio

    count = int(rate * seconds)
    outcomes, latencies = {}, []
    heads = [f"POST /v1/models/catsdogs:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
             f"Connection: close\r\n\r\n".encode() + body for body in bodies]

    async def exchange(request):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            await reader.read()  # the rest, to the close: the whole answer
            return status
        finally:
            writer.close()

    async def one(index):
        await asyncio.sleep(index / rate)
        started = time.perf_counter()
        try:
            key = await asyncio.wait_for(exchange(heads[index % len(heads)]), timeout)
        except ConnectionRefusedError:
            key = "refused"  # nothing listening: not accepted, so never at risk
        except (OSError, IndexError, ValueError, asyncio.TimeoutError):
            key = "failed"
        outcomes[key] = outcomes.get(key, 0) + 1
        if key == 200:
            latencies.append(time.perf_counter() - started)

    async def run():
        await asyncio.gather(*(one(index) for index in range(count)))

    asyncio.run(run())
    return outcomes, np.array(latencies)


def report(label, outcomes, latencies):
    shed = outcomes.get(503, 0) + outcomes.get(429, 0)
    failed = sum(n for key, n in outcomes.items() if key not in (200, 503, 429, "refused"))
    p50, p99 = (np.percentile(latencies, [50, 99]) * 1000) if len(latencies) else (0, 0)
    print(f"{label}: {sum(outcomes.values())} sent: {outcomes.get(200, 0)} answered, {shed} shed "
          f"(503/429), {failed} failed, {outcomes.get('refused', 0)} refused {dict(sorted(outcomes.items(), key=str))}; answered "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)


def soak(model_dir, bodies, minutes, max_queue=None, workers=1):
    """A bounded overload of one server with default bounds (or `max_queue`), then a drain
    (module docstring)."""
    import signal

    port = free_port()
    print(f"--max-queue {max_queue or 'default'}, --workers {workers}", flush=True)
    with tempfile.TemporaryFile("w+") as out:
        server = start_server(model_dir / "model.keras", port, 32, out, max_queue, workers)
        sampler = MemorySampler(server.pid)
        try:
            load(port, bodies, 20, 4)  # warm-up
            latencies, errors, seconds = load(port, bodies, 200, 8)
            sustained = len(latencies) / seconds
            print(f"sustained (8 clients, closed loop): {sustained:.1f} requests/s, "
                  f"{errors} not 200", flush=True)
            sampler.start()
            offered = 2.5 * sustained
            print(f"overload: {offered:.1f} requests/s offered for {minutes * 60:.0f} s",
                  flush=True)
            report("overload", *open_loop(port, bodies, offered, minutes * 60))
            # the drain: SIGTERM 1 s into a 3 s burst at the same rate
            drain = threading.Thread(target=lambda: results.append(
                open_loop(port, bodies, offered, 3)))
            results = []
            drain.start()
            time.sleep(1)
            server.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            code = server.wait(timeout=60)
            print(f"drain: exit code {code} {time.perf_counter() - signalled:.1f} s after "
                  f"SIGTERM", flush=True)
            drain.join(timeout=60)
            report("during the drain (refused: after the listener closed)", *results[0])
        finally:
            sampler.stop()
            if server.poll() is None:
                server.kill()
                server.wait()
        out.seek(0)
        bound = next((line.split("; ")[-1] for line in out if "memory bound" in line), "?")
    print(f"server peak RSS: VmHWM {sampler.hwm / 1e6:.0f} MB, VmRSS sampled max "
          f"{sampler.peak / 1e6:.0f} MB; printed at start: {bound.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--preset", default="seed-catsdogs")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="the load: raw HTTP/1.1 on keep-alive asyncio connections (little "
                             "CPU, as wrk) or httpx in one thread per client (before 2026-12-04)")
    parser.add_argument("--ceiling-only", action="store_true",
                        help="measure the model alone (the ceiling) and skip the HTTP load")
    parser.add_argument("--profile", action="store_true",
                        help="time each stage of one request in this process, then stop")
    parser.add_argument("--soak", type=float, metavar="MINUTES",
                        help="a bounded overload (2.5x what the server sustains) for MINUTES, "
                             "then a drain; then stop")
    parser.add_argument("--max-queue", type=int, nargs="+", default=[None],
                        help="with --soak: the servers' --max-queue, one soak each, in turn "
                             "[the server's default]")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="the batching server's --workers, one arm each, side by side "
                             "(with --soak: one soak each) [1]")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the arms this many times, alternating, for their spread")
    args = parser.parse_args()
    from catsdogs.models.presets import get_preset

    preset = get_preset(args.preset)
    photos, class_names = task_photos(preset)
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()}]}).encode()
              for p in photos]
    print(describe())
    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder)
        preset.build(len(class_names)).save(model_dir / "model.keras")
        (model_dir / "class_names.json").write_text(json.dumps(class_names))
        if args.profile:
            return profile(model_dir / "model.keras", bodies)
        if args.soak:
            for max_queue in args.max_queue:
                for workers in args.workers:
                    soak(model_dir, bodies, args.soak, max_queue, workers)
            return None
        single, batched, model_cpu = model_ceiling(model_dir / "model.keras", photos)
        print(f"the model alone, 1 image a call{single:>14.1f} images/s\n"
              f"the model alone, 32 images a call{batched:>12.1f} images/s   "
              f"{batched / single:.2f}x: the most batching can gain here ({args.preset})",
              flush=True)
        if args.ceiling_only:
            return
        send = CLIENTS[args.client]
        arms = [("one at a time (--max-batch 1)", 1, 1)] + [
            (f"dynamic batching (--max-batch 32{f', --workers {w}' if w > 1 else ''})", 32, w)
            for w in args.workers]
        results = {label: [] for label, _, _ in arms}
        for _ in range(args.rounds):
            for label, max_batch, workers in arms:
                results[label].append(throughput(
                    label, model_dir, max_batch, workers, send, bodies, args, model_cpu))
        baseline = np.mean(results[arms[0][0]])
        for label, _, _ in arms[1:]:
            rates = results[label]
            print(f"{label}: {np.mean(rates) / baseline:.2f}x the one-at-a-time images/s; "
                  f"{', '.join(f'{rate / batched:.0%}' for rate in rates)} of the model-alone "
                  f"ceiling ({batched:.1f} images/s)")


def throughput(label, model_dir, max_batch, workers, send, bodies, args, model_cpu):
    """Images/s of one server under the bounded load, printed with its latency and CPU."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as out:
        # every client admitted: this measures throughput, not shedding (--soak does)
        server = start_server(model_dir / "model.keras", port, max_batch, out,
                              max_queue=args.clients * workers, workers=workers)
        try:
            send(port, bodies, 20 * workers, args.clients)  # warm-up: tracing, allocation
            latencies, errors, seconds, cpu = measured(send, port, bodies, args.requests,
                                                       args.clients, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
    rate = len(latencies) / seconds
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
    print(f"{label:<36}{rate:>8.1f} images/s   p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  "
          f"p99 {p99:6.0f} ms  errors {errors}  ({len(latencies)} requests, "
          f"{args.clients} {args.client} clients, {args.preset})", flush=True)
    print(f"{'':<4}CPU per request: server {cpu['server']:.2f} ms (its event loop"
          f"{'s' if workers > 1 else ''} {cpu['loop']:.2f} ms), client {cpu['client']:.2f} ms; "
          f"the model alone {model_cpu:.2f} ms an image at 32 a call", flush=True)
    return rate


if __name__ == "__main__":
    main()
