"""Stopping without dropping: on SIGTERM or SIGINT the server turns readiness off, stops
accepting, answers every request it admitted, and returns (exit 0) within the drain time.

uvicorn's own graceful shutdown does the middle (close the listeners, close idle keep-alive
connections, wait `timeout_graceful_shutdown` for the rest); this adds the two ends, and a
grace for requests already on their way when the drain begins (DrainGrace).
"""

import contextlib
import signal
import threading

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from catsdogs.console import log
from catsdogs.serve.connections import HeaderDeadline
from catsdogs.serve.lingering import LingeringClose
from catsdogs.serve.parsing import BoundedParsing
from catsdogs.serve.refusals import ShapedRefusals

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SHUTDOWN_STEPS_SECONDS = 0.5  # uvicorn's pause after closing listeners, the lifespan shutdown
# (seconds) a connection with no request in progress when the drain begins waits for one
# already sent: the time for bytes in flight to arrive, and for the event loop, busy on a
# loaded machine, to read them
DRAIN_GRACE_SECONDS = 1.0


class DrainingServer(uvicorn.Server):
    """uvicorn's Server that marks the `gate` draining on the first signal, so the model's
    status answers UNAVAILABLE and new model requests get 503, and that does not re-raise the
    signal once drained (uvicorn does, so the process would die by SIGTERM, not exit 0)."""

    def __init__(self, config, gate, signals=SIGNALS):
        super().__init__(config)
        self.gate, self.signals = gate, signals

    def handle_exit(self, sig, frame):
        if not self.gate.draining:
            self.gate.draining = True
            log().info("draining: %d requests admitted; stopping within %.0f s", self.gate.admitted,
                       self.config.timeout_graceful_shutdown + SHUTDOWN_STEPS_SECONDS)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in self.signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class DrainGrace(HttpToolsProtocol):
    """uvicorn's HTTP protocol that, when the drain begins, does not cut a request on its way.

    uvicorn's shutdown closes at once every connection with no request in progress: one just
    accepted whose request the event loop has not read yet (under load, every connection
    accepted in the last loop turns), one whose headers are half in, an idle keep-alive one
    whose next request is on the wire. Their clients see the connection closed, or reset
    (closing a socket with unread bytes sends a reset), after sending a whole request: the
    failures the soak counted during its drain. Here such a connection waits `drain_grace`
    seconds for a request: one that comes is answered (a model request with 503, the server
    is draining; the others as usual) and the connection closed after it; then uvicorn's
    shutdown closes what is still idle. A request in progress is answered, then its
    connection closed, as uvicorn does.
    """

    drain_grace = DRAIN_GRACE_SECONDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draining = False

    def shutdown(self):
        if self.cycle is not None and not self.cycle.response_complete:
            return super().shutdown()  # keep_alive off: closed once answered
        self.draining = True
        self.loop.call_later(self.drain_grace, self._end_grace)

    def on_headers_complete(self):
        super().on_headers_complete()
        if self.draining and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # the request that came in the grace is the last

    def _end_grace(self):
        if not self.transport.is_closing():
            super().shutdown()


def protocol_class(header_timeout):
    """The protocol uvicorn runs every connection with (uvicorn.Config's `http=`): its httptools
    protocol (llhttp, in C: the event loop spends about a quarter less a request than on h11's,
    in pure Python; bench/RESULTS.md, "Cheaper requests") with a lingering close for a request
    answered before its body was read (lingering.py), a deadline for headers (connections.py),
    a grace for requests on their way when the drain begins (DrainGrace), bounds on what its
    parser holds (parsing.py) and its own refusals in the server's error shape (refusals.py)."""
    return type("ServerProtocol",
                (LingeringClose, HeaderDeadline, DrainGrace, BoundedParsing, ShapedRefusals),
                {"header_timeout": header_timeout})


def draining_server(app, config, signals=SIGNALS):
    """The server `serve` runs (see there), not yet started: `.run()` blocks until it drained.
    `signals`: those that start the drain (a worker of several: SIGTERM alone, workers.py)."""
    server_config = uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning",
        http=protocol_class(config.header_timeout), timeout_keep_alive=config.idle_timeout,
        ws="none",  # no WebSocket routes: an Upgrade request is answered as plain HTTP
        limit_concurrency=config.max_connections,
        timeout_graceful_shutdown=max(0.1, config.drain_seconds - SHUTDOWN_STEPS_SECONDS))
    return DrainingServer(server_config, app.state.gate, signals)


def serve(app, config, listener=None):
    """Run `app` (made by create_app with the ServeConfig `config`) on `config.host` and
    `config.port` until a signal, then drain within `config.drain_seconds`. Connections: at
    most `config.max_connections` (past it: 503, as refusals.py answers it), closed when idle
    `config.idle_timeout` seconds between requests (uvicorn's keep-alive) or when a request's
    headers take over `config.header_timeout` (connections.py).

    `listener`: the port bound by ports.reserve(config) before the start lines were printed
    (else bound here: a port in use is still one `error:` line, not uvicorn's); uvicorn
    listens on it and closes it when it has drained."""
    from catsdogs.serve.ports import reserve

    listener = listener if listener is not None else reserve(config)
    with listener:
        draining_server(app, config).run(sockets=[listener])
