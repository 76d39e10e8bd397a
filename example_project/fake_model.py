"""A local stand-in for a model API: a deterministic reply at a steady pace.

``stream_reply(text)`` yields OpenAI-style chat completion chunks (dicts with
``choices[0].delta.content``), like ``await client.chat.completions.create(...,
stream=True)`` does, so the example views run unchanged on either. Nothing
leaves the machine. The pace and length come from the environment, so tests
can make a generation long enough to interrupt:

- ``EXAMPLE_FAKE_TOKENS``: tokens after the echo (default 20);
- ``EXAMPLE_FAKE_INTERVAL``: seconds between chunks (default 0.05, 20/s).

A prompt containing ``please fail`` makes the model raise after three tokens,
as a provider error mid-generation would.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator


class FakeModelError(RuntimeError):
    pass


def reply_tokens(prompt: str, count: int) -> list[str]:
    """The deltas of the reply to ``prompt``: deterministic, for the tests."""
    return [f"You said: {prompt}."] + [f" token-{n}" for n in range(1, count + 1)]


async def stream_reply(prompt: str) -> AsyncIterator[dict]:
    count = int(os.environ.get("EXAMPLE_FAKE_TOKENS", "20"))
    interval = float(os.environ.get("EXAMPLE_FAKE_INTERVAL", "0.05"))
    yield {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    for n, token in enumerate(reply_tokens(prompt, count)):
        if n == 3 and "please fail" in prompt:
            raise FakeModelError("the fake model failed as asked")
        await asyncio.sleep(interval)
        yield {"choices": [{"index": 0, "delta": {"content": token}}]}
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
