"""The server's port, bound by catsdogs before anything is printed or loaded, then handed to
uvicorn (`Server.run(sockets=...)`): a port another program holds is one `error:` line naming
--port, exit 2, never a "Serving ..." line followed by uvicorn's own `[Errno 98]` and exit 3.

One process binds it here and serves on it; several (--workers, workers.py) each bind their
own with SO_REUSEPORT after the parent checked it with a plain bind (ports.bound)."""

import errno
import socket

from catsdogs.errors import CatsDogsError

BACKLOG = 2048  # uvicorn's default listen backlog


def family_and_address(host, port):
    """The socket family and bind address of `host` ("::1" and "[::1]" are IPv6), `port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host.strip("[]"), port)


def bound(family, address, reuse_port=False):
    """A TCP socket bound to `address`, not listening (a bound socket that does not listen
    refuses connections: nothing waits in a backlog while the model loads). SO_REUSEADDR, as
    uvicorn binds (a restart need not wait out TIME_WAIT; it does not share a port another
    socket listens on). A port that cannot be had is one CatsDogsError naming the flag."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise refusal(address, error) from None
    return sock


def refusal(address, error):
    """The CatsDogsError for `error` (an OSError) binding `address`: which flag, which fix."""
    host, port = address[0], address[1]
    shown = f"[{host}]" if ":" in host else host
    if error.errno == errno.EADDRINUSE:
        return CatsDogsError(f"port {port} on {shown} is in use", where="--port",
                             fix="stop what holds it or pass another --port")
    if error.errno in (errno.EACCES, errno.EPERM):
        return CatsDogsError(f"no permission to listen on port {port} on {shown}",
                             where="--port", fix="pass a --port of 1024 or above")
    reason = error.strerror or str(error)
    return CatsDogsError(f"cannot listen on {shown}:{port}: {reason}", where="--host",
                         fix="pass a --host address of this machine (127.0.0.1, 0.0.0.0, ::1)")


def reserve(config):
    """The port of `config` (a ServeConfig), bound and listening, for one server process: call
    before the model loads and the start lines print; give it to `drain.serve`. It listens at
    once (connections wait in the backlog while the model loads): a socket only bound, with
    SO_REUSEADDR, would not keep another server from taking the port in the meantime."""
    family, address = family_and_address(config.host, config.port)
    return listening(bound(family, address), address)


def listening(sock, address):
    """`sock` (bound to `address`) listening; a refusal is the port's one error line."""
    try:
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise refusal(address, error) from None
    return sock
