"""The ceiling: a trivial ASGI app (read the body, answer 204) for ``make bench``.

Served by the same ASGI server command as ours, it measures what that server
alone allows on this machine, the figure our appends are compared with.
"""

from __future__ import annotations


async def app(scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
