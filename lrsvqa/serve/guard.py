"""ASGI middleware in front of the app: bearer-token check and request-body limit.

Runs before routing, so a refused request never reaches a handler, a file or the model.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

# Paths that carry no data and must load in a browser before it knows the token.
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset(
    {"/", "/index.html", "/favicon.ico", "/docs", "/openapi.json", "/api/health"}
)


class Guard:
    """401 without the right ``Authorization: Bearer`` token (when one is set); 413 for a
    body over ``max_body`` bytes (counted as it arrives, Content-Length or not)."""

    def __init__(self, app: Any, *, token: str | None, max_body: int):
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.token is not None and not _public(path) and not self._authorised(scope):
            await _json(
                send,
                401,
                {"error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                [(b"www-authenticate", b'Bearer realm="lrsvqa"')],
            )
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _json(send, 400, {"error": "Content-Length is not a number"})
                return
            if declared > self.max_body:
                await _too_large(send, self.max_body)
                return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_body:
                    await _too_large(send, self.max_body)
                    return
                if not message.get("more_body", False):
                    break
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: dict[str, Any]) -> bool:
        assert self.token is not None
        header = _header(scope, b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(given.strip(), self.token)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


async def _too_large(send: Any, limit: int) -> None:
    await _json(send, 413, {"error": f"the request body is over the {limit:,} byte limit"})


async def _json(
    send: Any,
    status: int,
    payload: dict[str, Any],
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
