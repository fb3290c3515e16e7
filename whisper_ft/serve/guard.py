"""Keep web pages the user visits from driving a local server.

A server on 127.0.0.1 is reachable by any page in the user's browser: a cross-origin
``multipart/form-data`` POST needs no CORS preflight, so the page can make the server decode
whatever it likes, and with DNS rebinding (a hostile name that resolves to 127.0.0.1) it can read
the answers too. Two checks, before any route runs:

- ``Host`` must be a name this server answers to (:meth:`ServerSettings.host_names`: loopback
  names for a loopback server, plus ``--allowed_hosts``), else 400. A rebound name fails here.
- A request carrying an ``Origin`` (browsers add it to cross-origin requests and to every POST)
  must come from the server's own origin (the built-in page) or one of ``--cors_origins``, else 403.
  Clients that are not browsers (curl, the OpenAI SDKs) send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from whisper_ft.serve.errors import error_body


def _split_host(value: str) -> tuple[str, str | None]:
    """``Host``/origin netloc -> (lower-case name, port or None); IPv6 keeps its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[: end + 1], value[end + 1:]
        return name, rest[1:] if rest.startswith(":") else None
    name, _, port = value.partition(":")
    return name, port or None


class BrowserGuard:
    """Pure ASGI middleware (a ``BaseHTTPMiddleware`` would get in the way of streamed uploads)."""

    def __init__(self, app, hosts: frozenset[str] | None, cors_origins: tuple[str, ...] = ()):
        self.app, self.hosts = app, hosts
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name, port = _split_host(host)
        if self.hosts is not None and name not in self.hosts:
            return await _refuse(scope, send, 400, f"Host {host!r} is not served here: use one of "
                                 f"{', '.join(sorted(self.hosts))}, or start the server with --allowed_hosts {name}",
                                 "invalid_host")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != "null":
            parts = urlsplit(origin)
            same = _split_host(parts.netloc) == (name, port)
            if not same and origin.rstrip("/").lower() not in self.cors_origins and "*" not in self.cors_origins:
                return await _refuse(scope, send, 403, f"requests from the web page {origin} are not allowed: start the "
                                     f"server with --cors_origins {origin} to let that page call it", "origin_not_allowed")
        elif origin is not None:  # "null": sandboxed frames and file:// pages
            if "null" not in self.cors_origins:
                return await _refuse(scope, send, 403, "requests from an opaque origin (a file:// page or a sandboxed "
                                     "frame) are not allowed: serve the page from a --cors_origins origin",
                                     "origin_not_allowed")
        return await self.app(scope, receive, send)


async def _refuse(scope, send, status: int, message: str, code: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(error_body(message, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One line per request on stderr (logger ``whisper_ft.serve.access``, level INFO): client,
    method, path, status, seconds of audio and of decoding (what the audio endpoints put in
    ``request.state``), and the whole time. ``--log_level warning`` silences it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import logging
        import time

        started, status = time.perf_counter(), [0]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state") or {}
            extra = "".join(f" {name} {state[key]:.2f} s" for name, key in (("audio", "audio_seconds"),
                                                                             ("decode", "decode_seconds"))
                            if isinstance(state.get(key), (int, float)))
            client = scope.get("client") or ("-", 0)
            logging.getLogger("whisper_ft.serve.access").info(
                '%s "%s %s" %s%s total %.2f s', client[0], scope["method"], scope["path"], status[0] or "-", extra,
                time.perf_counter() - started)
