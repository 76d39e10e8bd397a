"""The token writer's pure parts: the batching rule and the chunk encodings."""

from __future__ import annotations

import asyncio
import json

import pytest

from durable_streams.ai.coalesce import Coalescer
from durable_streams.ai.encoding import JSONMessages, Text, resolve_encoding


def test_a_batch_is_due_when_the_first_unit_has_lingered():
    batch = Coalescer(linger=0.05, batch_size=10)
    assert batch.due_at() is None and not batch.due(100.0)
    batch.add([b"a"], now=1.0)
    batch.add([b"b"], now=1.04)  # a later unit does not push the deadline back
    assert batch.due_at() == pytest.approx(1.05)
    assert not batch.due(1.049)
    assert batch.due(1.05)
    assert batch.take() == [b"a", b"b"]
    assert batch.due_at() is None


def test_a_full_batch_is_due_at_once_and_is_cut_at_batch_size():
    batch = Coalescer(linger=10.0, batch_size=3)
    batch.add([b"1", b"2"], now=0.0)
    assert not batch.due(0.0)
    batch.add([b"3", b"4"], now=0.0)
    assert batch.full and batch.due(0.0)
    assert batch.take() == [b"1", b"2", b"3"]
    # The left-over unit keeps its start time: it is due with the old deadline.
    assert batch.due_at() == 10.0
    assert batch.take_all() == [b"4"] and len(batch) == 0


def test_empty_units_do_not_start_the_clock():
    batch = Coalescer(linger=1.0, batch_size=2)
    batch.add([], now=5.0)
    assert batch.due_at() is None


def test_bad_batching_values_are_refused():
    with pytest.raises(ValueError):
        Coalescer(linger=-1, batch_size=1)
    with pytest.raises(ValueError):
        Coalescer(linger=0, batch_size=0)


def test_json_messages_join_into_one_array_of_messages():
    enc = JSONMessages()
    units = enc.encode({"type": "text-delta", "delta": "é"}) + enc.encode([1, 2])
    body = enc.join(units)
    # The list chunk stays one message: the array only wraps the batch.
    assert json.loads(body) == [{"type": "text-delta", "delta": "é"}, [1, 2]]


def test_a_transform_maps_a_chunk_to_zero_or_more_messages():
    enc = resolve_encoding(lambda c: None if c == "skip" else [{"t": c}, {"t": c + "!"}])
    assert enc.encode("skip") == []
    assert [json.loads(u) for u in enc.encode("x")] == [{"t": "x"}, {"t": "x!"}]


def test_error_markers_say_failed_or_cancelled_without_the_exception_text():
    enc = JSONMessages()
    (failed,) = enc.error_units(RuntimeError("secret api key sk-123"))
    assert json.loads(failed) == {"type": "error", "error": "generation failed"}
    (cancelled,) = enc.error_units(asyncio.CancelledError())
    assert json.loads(cancelled)["error"] == "generation cancelled"
    assert JSONMessages(error_marker=None).error_units(RuntimeError()) == []
    custom = JSONMessages(error_marker=lambda e: {"type": "error", "errorText": "boom"})
    assert json.loads(custom.error_units(ValueError())[0])["errorText"] == "boom"


def test_text_concatenates_str_and_bytes_and_skips_empty_chunks():
    enc = resolve_encoding("text")
    units = enc.encode("héllo ") + enc.encode(b"world") + enc.encode("") + enc.encode(None)
    assert enc.join(units) == "héllo world".encode()
    assert b"generation failed" in enc.join(enc.error_units(RuntimeError()))
    with pytest.raises(TypeError):
        enc.encode(3)


def test_text_transform_picks_the_text_of_an_sdk_event():
    enc = Text(transform=lambda event: event.get("content"))
    assert enc.encode({"content": "hi"}) == [b"hi"]
    assert enc.encode({"role": "assistant"}) == []


def test_an_unknown_encoding_name_is_refused():
    with pytest.raises(TypeError):
        resolve_encoding("xml")
