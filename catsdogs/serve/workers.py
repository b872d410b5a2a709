"""Several server processes on one port (`catsdogs serve --workers N`).

One process keeps a machine's cores busy only while its model runs: its event loop (HTTP,
JSON, routing) and the model take turns. N processes, each with the model and 1/N of the
cores for it, overlap one's HTTP work with another's model call; measured on 2 cores
(bench/RESULTS.md, "Several processes"), 2 processes of one thread each kept more of the
model-alone ceiling than one process of two threads.

The parent binds the port first (one clear error if it is taken) and holds it without
listening, starts N workers (spawned: a fresh interpreter each, never a fork of a process
holding TensorFlow's threads) that each listen on it with SO_REUSEPORT, waits for each to
load its model and report its memory bound, then supervises. SO_REUSEPORT, not one socket
shared by all: the kernel then spreads new connections over the workers evenly, where with a
shared socket the worker that wakes first accepts every connection waiting (16 keep-alive
clients were split 5 and 11, and the one with 11 became the bottleneck); and a worker's
listener dies with it, so no new connection is sent to a dead process.

- the bounds are the server's: each worker admits its share (ServeConfig.per_worker);
- /metrics answers for all of them: prometheus_client's multiprocess mode, its files in a
  folder made for this server (or the PROMETHEUS_MULTIPROC_DIR the user set);
- SIGTERM or Ctrl-C reaches the parent, which tells every worker (SIGTERM): each turns its
  readiness off, answers what it admitted and exits 0 within --drain-seconds, as one server
  does (drain.py); workers ignore the terminal's SIGINT so one Ctrl-C is one drain, and drain
  by themselves if the parent dies;
- a worker that dies after it was ready is replaced; one that fails before is the server's
  failure (its error line, exit code).

uvicorn's own `--workers` (uvicorn.supervisors.Multiprocess) is not used: it runs a plain
uvicorn.Server built from a pickled Config with an import-string app in each process, so it
has no place for the model loaded once per worker before the port is served, the ready
report with each worker's memory bound, or the drain that turns readiness off first.
"""

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time

from catsdogs.console import log
from catsdogs.errors import CatsDogsError, RunFailed, debugging, reportable
from catsdogs.serve.memory import process_memory
from catsdogs.serve.ports import bound, family_and_address, listening

METRICS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
READY_SECONDS = 600  # a worker loading its model (a cold disk, a large model) may take minutes
# (seconds) past --drain-seconds before a worker still running is killed: its own drain is
# bounded by --drain-seconds, this covers its interpreter's exit
EXIT_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.5
# a worker dying this often (each slot, in this window) is a crash loop, not bad luck: stop
RESTARTS_PER_WORKER = 3
RESTART_WINDOW_SECONDS = 60.0


def cores():
    """The cores this process may run on (its affinity, as `taskset` or a container sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def bind(host, port, listen):
    """A socket bound to host:port with SO_REUSEPORT, listening (a worker's) or not (the
    parent's, holding the port while the workers start: a bound socket that does not listen
    gets no connections). A port another process holds, another catsdogs server included, is
    one error line."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise CatsDogsError("--workers needs SO_REUSEPORT, which this system lacks",
                            fix="run one process (--workers 1) per port")
    family, address = family_and_address(host, port)
    if not listen:  # the parent, first: SO_REUSEPORT alone would let it join another server
        with bound(family, address, reuse_port=False):  # fails if anything holds the port
            pass
    sock = bound(family, address, reuse_port=True)
    return listening(sock, address) if listen else sock


@contextlib.contextmanager
def metrics_folder():
    """The folder prometheus_client's multiprocess mode keeps every worker's metrics in, set
    in the environment the workers inherit; made here and removed after, unless the user set
    PROMETHEUS_MULTIPROC_DIR (then theirs, which must hold no earlier server's files, and is
    left as it is)."""
    if os.environ.get(METRICS_VARIABLE):
        folder = os.environ[METRICS_VARIABLE]
        if not os.path.isdir(folder):
            raise CatsDogsError("PROMETHEUS_MULTIPROC_DIR names no folder", where=folder,
                                fix="create that empty folder, or unset the variable (the "
                                    "server then makes its own)")
        if any(name.endswith(".db") for name in os.listdir(folder)):
            raise CatsDogsError("PROMETHEUS_MULTIPROC_DIR holds the metrics of an earlier "
                                "server, which would be added to this one's", where=folder,
                                fix="empty the folder (prometheus_client's rule: wiped "
                                    "between runs), or unset the variable")
        yield folder
        return
    folder = tempfile.mkdtemp(prefix="catsdogs-metrics-")
    os.environ[METRICS_VARIABLE] = folder
    try:
        yield folder
    finally:
        del os.environ[METRICS_VARIABLE]
        shutil.rmtree(folder, ignore_errors=True)


def serve_workers(config, prepare, announce, args):
    """Serve with `config.workers` processes until a signal, then drain; the exit code.

    Args:
        config: the server's ServeConfig (its bounds are the whole server's).
        prepare: a module-level function `prepare(args, config) -> (app, classifier, bound,
            terms)` each worker calls with its share of the config (commands/serve.py).
        announce: `announce(source, bound, terms)` prints the start lines, once all are ready.
        args: the command's parsed flags, given to `prepare` in each worker.
    """
    reservation = bind(config.host, config.port, listen=False)
    worker_config = config.per_worker()
    threads = max(1, cores() // config.workers)
    context = multiprocessing.get_context("spawn")
    with metrics_folder(), reservation:
        messages = context.Queue()

        def start():
            process = context.Process(target=_worker, name="catsdogs-serve-worker", args=(
                prepare, args, worker_config, messages, threads))
            process.start()
            return process

        workers, stopping, ready_pids = [], [], set()
        original = {sig: signal.signal(sig, lambda sig, frame: stopping.append(sig))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for _ in range(config.workers):
                workers.append(start())
            ready = _wait_ready(workers, messages, stopping)
            ready_pids.update(report[1] for report in ready)
            if not stopping:  # each worker's bound is the sum of its terms (memory.py)
                terms = collections.Counter()
                for report in ready:
                    terms.update(report[4])
                terms["supervisor"] = process_memory()["VmRSS"]
                announce(ready[0][2], sum(terms.values()), dict(terms))
            return _supervise(workers, start, messages, stopping, ready_pids,
                              config.drain_seconds + EXIT_GRACE_SECONDS)
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            for process in workers:
                if process.is_alive():
                    process.kill()
                    process.join()


def _wait_ready(workers, messages, stopping):
    """Every worker's ("ready", pid, source, bound, terms), in the order they came; a worker's
    error (or its death before it was ready) is raised, and serve_workers stops the others."""
    ready, deadline = [], time.monotonic() + READY_SECONDS
    while len(ready) < len(workers) and not stopping:
        try:
            message = messages.get(timeout=POLL_SECONDS)
        except queue.Empty:
            dead = [process for process in workers if not process.is_alive()]
            if dead:
                raise RunFailed(f"a server process exited with code {dead[0].exitcode} before "
                                f"it was ready", fix="its output above says why")
            if time.monotonic() > deadline:
                raise RunFailed(f"the server processes were not ready within {READY_SECONDS} s")
            continue
        if message[0] == "error":
            raise message[1]
        ready.append(message)
    return ready


def _supervise(workers, start, messages, stopping, ready_pids, exit_seconds):
    """Replace workers that die while serving; on the first signal tell each to drain (each
    closes its listener: new connections are refused) and wait for them (killing one still
    running `exit_seconds` later).
    0 when every worker that served exited 0 after the signal, else 1 (also when a replacement
    died before it was ready, or workers died more than RESTARTS_PER_WORKER times each within
    RESTART_WINDOW_SECONDS: the server stops rather than start one after another). A second
    signal kills the workers at once, as a second Ctrl-C stops uvicorn."""
    deadline, failed, restarts = None, False, []
    while True:
        alive = [process for process in workers if process.is_alive()]
        if len(stopping) > 1 and deadline is not None and alive:  # a second Ctrl-C: at once
            deadline = time.monotonic()
        if stopping and deadline is None:
            for process in alive:
                os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + exit_seconds
        if deadline is not None and not alive:
            break
        if deadline is not None and time.monotonic() >= deadline:
            log().warning("%d server processes still running: killed", len(alive))
            for process in alive:
                process.kill()
                process.join()
            continue
        _drain_messages(messages, ready_pids)
        for index, process in enumerate(workers):
            if deadline is not None or process.is_alive():
                continue
            _forget(process)
            now = time.monotonic()
            restarts = [moment for moment in restarts if now - moment < RESTART_WINDOW_SECONDS]
            if process.pid not in ready_pids:
                failure = (f"a replacement server process exited with code {process.exitcode} "
                           f"before it was ready")
            elif len(restarts) >= RESTARTS_PER_WORKER * len(workers):
                failure = (f"server processes exited {len(restarts) + 1} times in "
                           f"{RESTART_WINDOW_SECONDS:.0f} s")
            else:
                failure = None
            if failure:
                log().error("%s: stopping", failure)
                failed = True
                stopping.append("failed")
                break
            restarts.append(now)
            log().warning("a server process (pid %d) exited with code %s: starting another",
                          process.pid, process.exitcode)
            workers[index] = start()
        multiprocessing.connection.wait([process.sentinel for process in alive],
                                        timeout=POLL_SECONDS)
    for process in workers:
        process.join()
        _forget(process)
    _drain_messages(messages, ready_pids)
    # one still loading its model when the signal came had admitted nothing: its end is no failure
    served = [process for process in workers if process.pid in ready_pids]
    return 0 if not failed and all(process.exitcode == 0 for process in served) else 1


def _drain_messages(messages, ready_pids):
    """Read what replacement workers report (so none blocks writing it): note the ready ones,
    log the errors."""
    with contextlib.suppress(queue.Empty):
        while True:
            message = messages.get_nowait()
            if message[0] == "ready":
                ready_pids.add(message[1])
                log().info("a replacement server process (pid %d) is ready", message[1])
            else:
                log().error("a replacement server process failed: %s", message[1])


def _forget(process):
    """Drop a finished worker's live gauges (admitted requests, bytes in flight) from the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(process.pid)


def _worker(prepare, args, config, messages, threads):
    """One worker process: its share of the cores for the model, the model loaded, its own
    listener on the port, the ready report, then the server until SIGTERM (from the parent,
    or its own when the parent is gone)."""
    from catsdogs import console
    from catsdogs.serve.drain import draining_server

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to pass on
    threading.Thread(target=_drain_when_orphaned, daemon=True).start()
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))  # before TensorFlow loads
    console.setup(quiet=args.quiet, verbose=args.verbose)
    try:
        app, classifier, bound, terms = prepare(args, config)
        listener = bind(config.host, config.port, listen=True)
    except Exception as error:  # the one line run_command would print, sent to the parent
        if debugging() and not isinstance(error, CatsDogsError):
            raise
        messages.put(("error", reportable(error)))
        return
    server = draining_server(app, config, signals=(signal.SIGTERM,))
    # from here a SIGTERM drains (before uvicorn's own handler is in place, it makes the
    # server start and stop at once): the parent counts this worker as serving
    signal.signal(signal.SIGTERM, server.handle_exit)
    messages.put(("ready", os.getpid(), str(classifier.source), bound, terms))
    server.run(sockets=[listener])


def _drain_when_orphaned():
    """SIGTERM this worker when its parent dies (killed, crashed): it drains and exits instead
    of serving on, unsupervised (or, still loading its model, stops there)."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os.kill(os.getpid(), signal.SIGTERM)
