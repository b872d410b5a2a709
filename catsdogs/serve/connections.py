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

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than
    `header_timeout` seconds (set on the class drain.protocol_class makes)."""

    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def data_received(self, data):
        super().data_received(data)
        self._disarm_if_headers_arrived()

    def on_response_complete(self):
        self._arm()
        super().on_response_complete()  # may parse a pipelined request's headers at once
        self._disarm_if_headers_arrived()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def _arm(self):
        self._disarm()
        self._waiting_after = self.cycle  # a new cycle is made when the next headers are in
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self):
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _disarm_if_headers_arrived(self):
        if self.cycle is not getattr(self, "_waiting_after", None):
            self._disarm()

    def _expire(self):
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
