"""The SSE id fields @resumable adds: one per event, naming the offset after it."""

from durable_streams import offsets
from durable_streams.resumable import _IdState

SID = "a" * 32


def _id(position: int) -> bytes:
    return f"id: ds:{SID}:{offsets.encode(position)}\n".encode()


def test_each_event_gets_the_offset_just_past_its_blank_line():
    body = b"data: a\n\ndata: b\n\n"
    out = _IdState().add_ids(body, 0, SID)
    assert out == b"data: a\n" + _id(9) + b"\n" + b"data: b\n" + _id(18) + b"\n"


def test_events_split_across_chunks_and_crlf_line_ends():
    state = _IdState()
    body = b"data: a\r\n\r\ndata: b\n"
    first, second = body[:10], body[10:]  # split inside the blank line's CRLF
    out = state.add_ids(first, 0, SID) + state.add_ids(second, 10, SID)
    assert out == b"data: a\r\n" + _id(10) + b"\r\ndata: b\n"
    assert state.add_ids(b"\n", len(body), SID) == _id(len(body) + 1) + b"\n"


def test_offsets_count_from_the_chunk_start():
    out = _IdState().add_ids(b"data: x\n\n", 100, SID)
    assert _id(109) in out
