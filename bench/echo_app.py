"""The HTTP floor for bench row 3e: an ASGI app that returns the body it was sent.

Served by uvicorn like the service (``python -m uvicorn bench.echo_app:app``), it does no
decoding, no model and no encoding: what a request costs beyond it is the service's own work.
"""

from __future__ import annotations

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
