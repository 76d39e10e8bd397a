"""Read routes: serve the durable read protocol of a stream the app chose.

Both transports read through a URL the application hands out (the AI SDK
example's ``/api/chat-stream?path=...``, TanStack's ``/api/chat-stream?id=...``):
the app authorises the request its own way (session, chat ownership), picks
the stream, and the protocol read is answered here exactly as the stream URL
would answer it (catch-up, long-poll, SSE, offsets and cursors from the
query), without the stream access policy, which the app's view replaces.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .. import views
from ..exceptions import StreamError

__all__ = ["serve_read"]


async def serve_read(
    request: HttpRequest, stream_path: str, *, private: bool = True
) -> HttpResponse:
    """Answer a GET/HEAD of the stream at ``stream_path`` from ``request``'s query.

    Only reads: any other method answers 405. ``private`` (the default) turns
    the shared-cache ``Cache-Control`` of catch-up reads private, since the
    route is authorised per user.
    """
    try:
        response = await views.read(request, stream_path)
    except StreamError as exc:
        return views.error_response(request, exc)
    if private and response.get("Cache-Control", "").startswith("public"):
        response["Cache-Control"] = "private" + response["Cache-Control"][len("public") :]
    return views.finish(request, response)
