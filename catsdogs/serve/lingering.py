"""A lingering close: a refused request's answer is not lost to a reset.

The server answers some requests before reading their bodies: 503 when it is full (the body is
never read, admission.py), 413 for one over the limit, 408 for one too slow. uvicorn then
closes the socket with the body's bytes still unread, and a TCP socket closed with unread data
sends a reset, not a FIN: the client's kernel drops whatever of the answer it has not yet
handed to the client, which sees "connection reset" instead of its 503 and Retry-After. Under
a 2.5x overload with one request per connection, about 1 shed request in 10 was lost that way
(bench/RESULTS.md, "A lingering close, and the soak with two processes"). Apache and nginx
close the same way (nginx's `lingering_close`): send the answer and a FIN (half-close), keep
reading and discarding what the client still sends, and close once it closes too or
`LINGER_SECONDS` pass.

Only a connection closed while its request's body is still coming lingers; every other close
is immediate, as before: a head or a stream the parser refused (parsing.py) is cut off at once,
its sender being no client to wait for. Nothing is written once a connection lingers: a
pipelined request's answer still running is dropped with the connection.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# (seconds) a connection closed mid-body waits for its client to close, reading and discarding;
# nginx waits up to 30 s in all (lingering_time), 5 s between reads (lingering_timeout)
LINGER_SECONDS = 2.0


class LingeringTransport:
    """The connection's transport as uvicorn's protocol and its request cycles see it: its own
    in every way but `close()`, which lingers when the request's body is still coming."""

    def __init__(self, transport, protocol):
        self._transport, self._protocol = transport, protocol
        self._timer = None

    def __getattr__(self, name):
        return getattr(self._transport, name)

    @property
    def lingering(self):
        return self._timer is not None

    def is_closing(self):
        return self.lingering or self._transport.is_closing()

    def write(self, data):
        if not self.lingering:  # after the FIN nothing more is sent (an answer still running)
            self._transport.write(data)

    def writelines(self, lines):
        if not self.lingering:
            self._transport.writelines(lines)

    def close(self):
        cycle = self._protocol.cycle
        body_coming = cycle is not None and cycle.more_body
        if self.lingering or self._transport.is_closing() or not body_coming \
                or not self._transport.can_write_eof():
            return self.abort_linger()
        self._transport.write_eof()  # the answer, then a FIN: the client reads all of it
        self._transport.resume_reading()  # flow control may have paused: read what comes
        self._timer = self._protocol.loop.call_later(LINGER_SECONDS, self.abort_linger)
        return None

    def abort_linger(self):
        """Close now (the client closed, the time is up, or no linger was needed)."""
        if self._timer is not None:
            self._timer.cancel()
        self._transport.close()


class LingeringClose(HttpToolsProtocol):
    """uvicorn's HTTP protocol on a LingeringTransport: bytes that come while it lingers are
    discarded, unparsed; the client's FIN ends the linger."""

    def connection_made(self, transport):
        super().connection_made(LingeringTransport(transport, self))

    def data_received(self, data):
        if self.transport.lingering:
            return
        super().data_received(data)

    def eof_received(self):
        if self.transport.lingering:
            self.transport.abort_linger()
        return super().eof_received()

    def connection_lost(self, exc):
        if self.transport.lingering:
            self.transport.abort_linger()  # cancels the timer
        super().connection_lost(exc)
