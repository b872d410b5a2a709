"""The Host header allow-list of a server without an API key: DNS rebinding's defence.

A page on evil.example can make the browser resolve evil.example to 127.0.0.1 and then read a
key-less server on this machine as its own origin; the one thing it cannot change is the Host
header, which names evil.example. So a server without --api-key answers only requests for
the names it is known by: localhost, 127.0.0.1, [::1], its --host, and --allowed-hosts.
Starlette's TrustedHostMiddleware decides; this answers its refusals in the server's error
shape ({"error": ...}), not Starlette's plain text.
"""

from starlette.middleware.trustedhost import TrustedHostMiddleware

from catsdogs.serve.errors import ServeError

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
_ALLOWED = "catsdogs.allowed_host"  # set in the scope by TrustedHostMiddleware's inner app


def allowed_hosts(host, extra=()):
    """The names a key-less server listening on `host` answers to (IPv6 addresses bracketed,
    as they appear in a Host header)."""
    names = [*LOCAL_NAMES, host, *extra]
    return tuple(dict.fromkeys(f"[{name.strip('[]')}]" if ":" in name else name.lower()
                               for name in names))


async def _mark_allowed(scope, receive, send):
    scope[_ALLOWED] = True


class AllowedHosts:
    """ASGI middleware: requests whose Host is not in `hosts` get 400 {"error": ...}."""

    def __init__(self, app, hosts):
        self.app, self.hosts = app, hosts
        self.check = TrustedHostMiddleware(_mark_allowed, list(hosts), www_redirect=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def drop(message):  # Starlette's own plain-text refusal, replaced below
            pass

        await self.check(scope, receive, drop)
        if scope.pop(_ALLOWED, False):
            return await self.app(scope, receive, send)
        raise ServeError(400, f"Host header not allowed: this server answers to "
                              f"{', '.join(self.hosts)} (--allowed-hosts adds names; with "
                              f"--api-key any name is answered)")
