"""Streaming views of the kind a project already has, made resumable by the decorator."""

import asyncio
import time

from django.http import StreamingHttpResponse

from durable_streams.resumable import resumable


@resumable
async def slow_sse(request):
    n = int(request.GET.get("n", "20"))
    interval = float(request.GET.get("interval", "0.05"))

    async def events():
        for i in range(n):
            yield f"data: token {i}\n\n"
            await asyncio.sleep(interval)

    return StreamingHttpResponse(events(), content_type="text/event-stream")


@resumable
def slow_text(request):
    """A sync view with a sync iterator (as under WSGI-era code)."""
    n = int(request.GET.get("n", "20"))
    interval = float(request.GET.get("interval", "0.05"))

    def words():
        for i in range(n):
            yield f"word{i} "
            time.sleep(interval)

    return StreamingHttpResponse(words(), content_type="text/plain; charset=utf-8")


@resumable
async def failing_sse(request):
    async def events():
        for i in range(3):
            yield f"data: token {i}\n\n"
            await asyncio.sleep(0.02)
        raise RuntimeError("the model fell over")

    return StreamingHttpResponse(events(), content_type="text/event-stream")
