"""Adapters from model SDK streams to the text deltas the transports wrap.

The OpenAI (and OpenAI-compatible) Python SDK's ``stream=True`` chat
completion is an async iterator of chunks whose
``choices[0].delta.content`` holds the next piece of text; Anthropic's
``messages.stream()`` has ``text_stream``, already text deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

__all__ = ["openai_text_deltas"]


def _get(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


async def openai_text_deltas(chunks: AsyncIterable[Any]) -> AsyncIterator[str]:
    """The text of an OpenAI-style chat completion stream, delta by delta.

    Accepts the SDK's objects or plain dicts; chunks without text (the role
    announcement, the final usage chunk) are skipped.
    """
    async for chunk in chunks:
        choices = _get(chunk, "choices") or []
        if not choices:
            continue
        delta = _get(choices[0], "delta")
        text = _get(delta, "content") if delta is not None else None
        if text:
            yield text
