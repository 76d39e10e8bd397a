"""``manage.py streams`` subcommands in-process, and ``storage.expire``, against
real Postgres."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from durable_streams import api, offsets, storage
from durable_streams.exceptions import Gone, NotFound
from durable_streams.models import Segment, Stream

pytestmark = pytest.mark.django_db


def name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def streams(*args: str) -> str:
    out = io.StringIO()
    call_command("streams", *args, stdout=out)
    return out.getvalue()


def test_create_then_head_reports_the_stream(tmp_path):
    path = name()
    source = tmp_path / "initial.json"
    source.write_text('[{"a": 1}, {"b": 2}]')
    out = streams(
        "create", path, "--content-type", "application/json", "--ttl", "90", "--file", str(source)
    )
    assert out.strip() == f"{path} {offsets.encode(2)}"
    head = json.loads(streams("head", path, "--json"))
    assert head["message_count"] == 2 and head["ttl_seconds"] == 90 and head["state"] == "open"
    assert head["producers"] == [] and head["forks"] == []


def test_append_from_a_file_and_line_by_line(tmp_path):
    path = name()
    api.create_stream(path, content_type="application/json")
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"n": 1}\n\n{"n": 2}\n{"n": 3}\n')
    assert streams("append", path, "--file", str(lines), "--lines").strip() == offsets.encode(3)
    whole = tmp_path / "batch.json"
    whole.write_text('[{"n": 4}, {"n": 5}]')
    streams("append", path, "--file", str(whole), "--close")
    messages, _ = api.read_json(path)
    assert [m["n"] for m in messages] == [1, 2, 3, 4, 5]
    assert api.head(path).closed


def test_append_rejects_what_the_protocol_rejects(tmp_path):
    path = name()
    api.create_stream(path, content_type="application/json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CommandError, match=r"\(400\)"):
        streams("append", path, "--file", str(bad))
    with pytest.raises(CommandError, match=r"stream not found \(404\)"):
        streams("append", name("missing"), "--file", str(bad))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(CommandError, match="nothing to append"):
        streams("append", path, "--file", str(empty))


def test_tail_without_follow_prints_json_one_message_per_line_from_an_offset():
    path = name()
    api.create_stream(path, content_type="application/json", data=[{"i": i} for i in range(4)])
    assert streams("tail", path, "--no-follow").splitlines() == [f'{{"i":{i}}}' for i in range(4)]
    tail = streams("tail", path, "--no-follow", "--offset", offsets.encode(2))
    assert tail.splitlines() == ['{"i":2}', '{"i":3}']
    with pytest.raises(CommandError, match="malformed offset"):
        streams("tail", path, "--offset", "bogus")


def test_tail_prints_text_as_is():
    path = name()
    api.create_stream(path, content_type="text/plain", data="one\ntwo\n")
    assert streams("tail", path, "--no-follow") == "one\ntwo\n"


def test_ls_filters_by_prefix_state_and_kind():
    tag = uuid.uuid4().hex[:8]
    api.create_stream(f"{tag}/a", content_type="application/json", data=[1, 2])
    api.create_stream(f"{tag}/b", content_type="text/plain", data="xyz", closed=True)
    lines = streams("ls", f"{tag}/").splitlines()
    assert [line.split()[0] for line in lines] == [f"{tag}/a", f"{tag}/b"]
    assert "2 msgs" in lines[0] and "3 B" in lines[1] and " closed " in lines[1]
    assert [
        d["path"] for d in json.loads(streams("ls", f"{tag}/", "--state", "closed", "--json"))
    ] == [f"{tag}/b"]
    assert [
        d["path"] for d in json.loads(streams("ls", f"{tag}/", "--kind", "json", "--json"))
    ] == [f"{tag}/a"]


def test_close_fork_and_delete():
    src, child = name(), name("child")
    api.create_stream(src, content_type="text/plain", data="abcdef")
    out = streams("fork", child, src, "--offset", offsets.encode(4))
    assert out.strip() == f"{child} {offsets.encode(4)}"
    assert api.read(child).body == b"abcd"
    assert streams("close", src).strip() == offsets.encode(6)
    assert api.head(src).closed
    streams("delete", child)
    with pytest.raises(NotFound):
        api.head(child)
    with pytest.raises(CommandError, match="404"):
        streams("delete", child)


def test_stats_counts_streams_by_state_without_counting_appends():
    before = json.loads(streams("stats", "--json"))
    api.create_stream(name(), content_type="text/plain", data="x")
    api.create_stream(name(), content_type="text/plain", closed=True)
    after = json.loads(streams("stats", "--json"))
    assert after["streams"] == before["streams"] + 2
    assert after["open"] == before["open"] + 1 and after["closed"] == before["closed"] + 1
    assert after["appends_table_bytes"] > 0 and "appends_estimate" in after


def test_unknown_subcommands_and_bad_arguments_are_usage_errors():
    with pytest.raises(CommandError):
        streams("explode")
    with pytest.raises(CommandError, match="--batch-size"):
        streams("expire", "--batch-size", "0")
    with pytest.raises(CommandError, match="time zone"):
        streams("create", name(), "--expires-at", "2030-01-01T00:00:00")


# --- expiry ---------------------------------------------------------------------------------


def _expired(path: str, **kwargs) -> None:
    api.create_stream(path, content_type="text/plain", data="old data", **kwargs)


def test_expired_streams_stop_answering_at_their_expiry_instant():
    path = name()
    api.create_stream(
        path, content_type="text/plain", data="x", expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    api.head(path)
    Stream.objects.filter(path=path).update(expires_at=timezone.now())
    with pytest.raises(NotFound):
        api.head(path)
    assert Stream.objects.filter(path=path).exists()  # answered as gone, removed later


def test_expire_removes_expired_streams_and_their_data_in_batches():
    keep = name("keep")
    api.create_stream(keep, content_type="text/plain", data="fresh", ttl_seconds=3600)
    expired = [name("old") for _ in range(7)]
    for path in expired[:4]:
        _expired(path, ttl_seconds=0)
    for path in expired[4:]:
        _expired(path, expires_at=timezone.now() - dt.timedelta(seconds=1))
    ids = list(Stream.objects.filter(path__in=expired).values_list("pk", flat=True))
    assert Segment.objects.filter(stream_id__in=ids).count() == 7

    # Other tests' expired streams may be in the table too: a batch is full
    # (at least our 7 are due), and it removes at most its size of ours.
    assert storage.expire(batch_size=3, max_batches=1) == 3
    assert Stream.objects.filter(path__in=expired).count() >= 4
    # Batches run until one is not full: every expired stream goes, ours included.
    assert storage.expire(batch_size=3) >= Stream.objects.filter(path__in=expired).count()
    assert not Stream.objects.filter(path__in=expired).exists()
    assert not Segment.objects.filter(stream_id__in=ids).exists()
    assert api.read(keep).body == b"fresh"


def test_an_expired_stream_that_forks_still_read_is_kept_for_them():
    src, child = name("src"), name("child")
    api.create_stream(src, content_type="text/plain", data="shared", ttl_seconds=3600)
    storage.create_stream(child, content_type=None, ttl_seconds=3600, fork=storage.ForkSpec(src))
    Stream.objects.filter(path=src).update(ttl_seconds=0)
    assert storage.expire() >= 1  # other tests' expired streams may go too
    assert Stream.objects.filter(path=src, deleted_at__isnull=False).exists()  # soft-deleted
    assert api.read(child).body == b"shared"  # the fork still reads the source's data
    with pytest.raises(Gone):
        api.head(src)
    api.delete(child)  # the last fork goes: the source goes with it
    assert not Stream.objects.filter(path__in=[src, child]).exists()


def test_expire_command_reports_and_dry_run_removes_nothing():
    path = name("old")
    _expired(path, ttl_seconds=0)
    assert "expired streams" in streams("expire", "--dry-run")
    assert Stream.objects.filter(path=path).exists()
    out = streams("expire", "--batch-size", "100")
    assert out.startswith("removed ") and int(out.split()[1]) >= 1
    assert not Stream.objects.filter(path=path).exists()
