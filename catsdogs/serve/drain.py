"""Stopping without dropping: on SIGTERM or SIGINT the server turns readiness off, stops
accepting, answers every request it admitted, and returns (exit 0) within the drain time.

uvicorn's own graceful shutdown does the middle (close the listeners, close idle keep-alive
connections, wait `timeout_graceful_shutdown` for the rest); this adds the two ends.
"""

import contextlib
import signal
import threading

import uvicorn

from catsdogs.console import log
from catsdogs.serve.connections import HeaderDeadline
from catsdogs.serve.refusals import ShapedRefusals

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SHUTDOWN_STEPS_SECONDS = 0.5  # uvicorn's pause after closing listeners, the lifespan shutdown


class DrainingServer(uvicorn.Server):
    """uvicorn's Server that marks the `gate` draining on the first signal, so the model's
    status answers UNAVAILABLE and new model requests get 503, and that does not re-raise the
    signal once drained (uvicorn does, so the process would die by SIGTERM, not exit 0)."""

    def __init__(self, config, gate):
        super().__init__(config)
        self.gate = gate

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
        original = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def protocol_class(header_timeout):
    """The protocol uvicorn runs every connection with (uvicorn.Config's `http=`): its h11
    protocol with a deadline for headers (connections.py) and its own refusals in the server's
    error shape (refusals.py)."""
    return type("ServerProtocol", (HeaderDeadline, ShapedRefusals),
                {"header_timeout": header_timeout})


def draining_server(app, host, port, drain_seconds, config):
    """The server `serve` runs (see there), not yet started: `.run()` blocks until it drained."""
    server_config = uvicorn.Config(
        app, host=host, port=port, log_level="warning",
        http=protocol_class(config.header_timeout), timeout_keep_alive=config.idle_timeout,
        limit_concurrency=config.max_connections,
        timeout_graceful_shutdown=max(0.1, drain_seconds - SHUTDOWN_STEPS_SECONDS))
    return DrainingServer(server_config, app.state.gate)


def serve(app, host, port, drain_seconds, config):
    """Run `app` (made by create_app with the ServeConfig `config`) until a signal, then drain
    within `drain_seconds`. Connections: at most `config.max_connections` (past it: 503, as
    refusals.py answers it), closed when idle `config.idle_timeout` seconds between requests
    (uvicorn's keep-alive) or when a request's headers take over `config.header_timeout`
    (connections.py)."""
    draining_server(app, host, port, drain_seconds, config).run()
