"""The token writer against Postgres: batching, closure, failure, retries."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from django.db import OperationalError, connections

from durable_streams import api
from durable_streams.ai import JSONMessages, TokenWriter, awrite_stream, write_stream
from durable_streams.exceptions import Conflict
from durable_streams.executor import run

from ..support import close_executor_connections, read_bytes, unique

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20.0  # seconds a test waits for the writer at most (a bound, never asserted)


@pytest.fixture(autouse=True)
async def executor_connections():
    yield
    close_executor_connections()


def messages(path: str) -> list:
    return api.read_json(path)[0]


async def amessages(path: str) -> list:
    return await run(messages, path)


async def ahead(path: str) -> api.StreamMeta:
    return await api.ahead(path)


def segment_count(path: str) -> int:
    from durable_streams.models import Segment, Stream

    return Segment.objects.filter(stream=Stream.objects.get(path=path)).count()


async def tokens(count: int, pause: float = 0.0):
    for n in range(count):
        if pause:
            await asyncio.sleep(pause)
        yield {"n": n}


async def test_a_generation_is_written_in_batches_and_closed():
    path = unique("gen")
    result = await awrite_stream(path, tokens(200), linger=60.0, batch_size=50)
    assert await amessages(path) == [{"n": n} for n in range(200)]
    meta = await ahead(path)
    assert meta.closed and result.closed and result.ok
    assert result.next_offset == meta.tail_offset
    # Four full batches; the closure carries no data: five appends, four segments.
    assert (result.chunks, result.appends) == (200, 5)
    assert await run(segment_count, path) == 4


async def test_the_last_batch_and_the_closure_commit_together():
    path = unique("gen")
    result = await awrite_stream(path, tokens(7), linger=60.0, batch_size=50)
    assert result.appends == 1
    assert await amessages(path) == [{"n": n} for n in range(7)] and (await ahead(path)).closed


async def test_buffered_chunks_are_appended_when_the_linger_time_passes():
    path = unique("gen")
    seen: list = []

    async def slow_model():
        for n in range(3):
            yield {"n": n}
        # The model goes quiet: the batch must reach readers meanwhile.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not seen:
            await asyncio.sleep(0.02)
            seen.extend(await amessages(path))
        yield {"n": 3}

    result = await awrite_stream(path, slow_model(), linger=0.02, batch_size=100)
    assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await amessages(path) == [{"n": n} for n in range(4)] and result.closed


async def test_chunks_arriving_within_the_linger_time_share_one_append():
    path = unique("gen")

    async def bursty_model():
        for burst in range(2):
            for n in range(10):
                yield {"n": burst * 10 + n}
                await asyncio.sleep(0)  # a token at a time, far inside the linger
            # Quiet until the burst reached the stream (the linger timer's append).
            for _ in range(int(WAIT / 0.02)):
                if len(await amessages(path)) >= 10:
                    break
                await asyncio.sleep(0.02)

    result = await awrite_stream(path, bursty_model(), linger=1.0, batch_size=64)
    assert await amessages(path) == [{"n": n} for n in range(20)]
    # One append per burst; the second one carries the closure too.
    assert (result.chunks, result.appends) == (20, 2)


async def test_a_failing_generation_leaves_a_closed_stream_that_says_it_failed():
    path = unique("gen")

    async def broken_model():
        yield {"n": 0}
        yield {"n": 1}
        raise RuntimeError("upstream 500 with secret details")

    with pytest.raises(RuntimeError):
        await awrite_stream(path, broken_model(), linger=60.0)
    assert await amessages(path) == [
        {"n": 0},
        {"n": 1},
        {"type": "error", "error": "generation failed"},
    ]
    assert (await ahead(path)).closed
    assert b"secret" not in (await run(read_bytes, path))


async def test_a_cancelled_generation_is_marked_cancelled_and_closed():
    path = unique("gen")
    started = asyncio.Event()

    async def endless_model():
        n = 0
        while True:
            yield {"n": n}
            n += 1
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(awrite_stream(path, endless_model(), linger=0.02))
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    got = await amessages(path)
    assert got[-1] == {"type": "error", "error": "generation cancelled"}
    assert got[:-1] == [{"n": n} for n in range(len(got) - 1)]  # nothing lost, in order
    assert (await ahead(path)).closed


async def test_a_retried_append_whose_first_try_committed_is_stored_once(monkeypatch):
    path = unique("gen")
    real = api.aappend
    lost_acks = []

    async def ack_lost_once(*args, **kwargs):
        result = await real(*args, **kwargs)  # committed...
        if not lost_acks:
            lost_acks.append(result)
            raise OperationalError("connection lost before the acknowledgement")
        return result

    monkeypatch.setattr(api, "aappend", ack_lost_once)
    result = await awrite_stream(path, tokens(30), linger=60.0, batch_size=10)
    assert lost_acks  # the fault did happen
    assert await amessages(path) == [{"n": n} for n in range(30)]  # and nothing twice
    assert result.closed


async def test_a_batch_whose_retries_all_failed_is_sent_again_before_the_next(monkeypatch):
    path = unique("gen")
    real = api.aappend
    calls = []

    async def committed_but_failing_thrice(*args, **kwargs):
        calls.append(kwargs["producer"].seq)
        result = await real(*args, **kwargs)
        if len(calls) <= 2:  # the first batch: committed, yet both tries "fail"
            raise OperationalError("no acknowledgement")
        return result

    monkeypatch.setattr(api, "aappend", committed_but_failing_thrice)
    writer = TokenWriter(path, linger=60.0, batch_size=2, retries=1)
    await writer.open()
    with pytest.raises(OperationalError):
        for n in range(2):
            await writer.write({"n": n})
    await writer.write({"n": 2})
    result = await writer.finish()
    assert calls[:3] == [0, 0, 0]  # the unacknowledged batch went again first
    assert await amessages(path) == [{"n": 0}, {"n": 1}, {"n": 2}] and result.closed


async def test_session_streams_stay_open_and_take_later_turns():
    path = unique("session")
    await awrite_stream(path, tokens(2), close=False, linger=0.0)
    await awrite_stream(path, tokens(1), close=False, linger=0.0)
    assert await amessages(path) == [{"n": 0}, {"n": 1}, {"n": 0}]
    assert not (await ahead(path)).closed


async def test_text_generations_concatenate_tokens():
    path = unique("text")

    async def words():
        for word in ["Hello", ", ", "wörld"]:
            yield word

    await awrite_stream(path, words(), encoding="text", linger=0.01)
    assert (await run(read_bytes, path)) == "Hello, wörld".encode()
    assert (await ahead(path)).content_type.startswith("text/plain")


async def test_a_transform_turns_sdk_events_into_messages():
    path = unique("gen")

    async def sdk_events():
        yield {"choices": [{"delta": {"role": "assistant"}}]}
        yield {"choices": [{"delta": {"content": "Hi"}}]}

    def to_messages(event):
        text = event["choices"][0]["delta"].get("content")
        return [{"type": "delta", "text": text}] if text else None

    await awrite_stream(path, sdk_events(), encoding=JSONMessages(to_messages))
    assert await amessages(path) == [{"type": "delta", "text": "Hi"}]


async def test_writing_into_a_closed_stream_fails_loudly():
    path = unique("gen")
    await api.acreate_stream(path, content_type="application/json", closed=True)
    with pytest.raises(Conflict):
        await awrite_stream(path, tokens(1), create=False)


async def test_a_sync_iterable_is_pulled_on_a_thread():
    path = unique("gen")
    await awrite_stream(path, iter([{"a": 1}, {"a": 2}]))
    assert await amessages(path) == [{"a": 1}, {"a": 2}]


# --- the sync entry point (a Celery task) ---------------------------------------------------


def _in_thread(target):
    """Run like a worker thread: its own connection, closed at the end."""
    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as exc:
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return box


def test_write_stream_from_sync_code_appends_while_the_model_is_silent():
    path = unique("celery")
    seen = []

    def slow_model():
        yield "one "
        yield "two "
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not seen:
            time.sleep(0.02)
            data = read_bytes(path) if api.head(path).tail else b""
            if data:
                seen.append(data)
        yield "three"

    box = _in_thread(lambda: write_stream(path, slow_model(), encoding="text", linger=0.02))
    assert "error" not in box, box.get("error")
    assert seen == [b"one two "]
    assert read_bytes(path) == b"one two three"
    assert box["result"].closed and api.head(path).closed


def test_write_stream_marks_a_failure_closes_and_reraises():
    path = unique("celery")

    def broken():
        yield {"n": 0}
        raise ValueError("model crashed")

    box = _in_thread(lambda: write_stream(path, broken(), linger=60.0))
    assert isinstance(box.get("error"), ValueError)
    assert messages(path) == [{"n": 0}, {"type": "error", "error": "generation failed"}]
    assert api.head(path).closed


def test_write_stream_batches_by_size():
    path = unique("celery")
    box = _in_thread(lambda: write_stream(path, ({"n": n} for n in range(25)), batch_size=10))
    assert box["result"].appends == 3  # 10, 10, then 5 with the closure
    assert [m["n"] for m in messages(path)] == list(range(25))
    assert json.loads(read_bytes(path))[0] == {"n": 0}
