"""A deadline for request headers, which uvicorn lacks.

uvicorn closes a connection idle between requests (`timeout_keep_alive`, the server's
--idle-timeout), but its timer is cancelled by the first byte received and is not armed at all
on a new connection, so a client that connects and sends nothing, or dribbles a header a byte
at a time, holds the connection (and a --max-connections slot) for ever: a slowloris. Upstream
listed the missing timeouts (`--timeout-request-start`, `--timeout-request-complete`) in
Kludex/uvicorn#157, closed with neither done (the timer missing on a new connection:
Kludex/uvicorn#1192). This protocol arms one deadline when a connection opens and
after every response, and disarms it when a request's headers are complete; the body's
deadline is Admission's (admission.py), which can still answer 408 since the request is known.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose request headers take longer than
    `header_timeout` seconds (set on the class drain.protocol_class makes)."""

    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def data_received(self, data):
        super().data_received(data)
        self._disarm_if_headers_arrived()

    def on_response_complete(self):
        super().on_response_complete()  # may start a pipelined request, parsed already
        if self._waiting_for_headers():
            self._arm()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_headers(self):
        """No request is in progress: none yet, or the last one parsed is answered (the
        parser makes a new cycle the moment a request's headers are complete)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self):
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self):
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _disarm_if_headers_arrived(self):
        if not self._waiting_for_headers():
            self._disarm()

    def _expire(self):
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
