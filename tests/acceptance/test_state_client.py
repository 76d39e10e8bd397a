"""The official TypeScript State Protocol client agrees with the database.

Django models (tests/stateapp) write a history of inserts, updates, deletes,
bulk operations, moves between streams and rolled-back transactions; then
``createStreamDB`` from ``@durable-streams/state/db`` (tests/js/materialize.mjs,
run by node) preloads each stream from a daphne server, and its TanStack DB
collections must equal the rows in the database.

tests/js/node_modules comes from ``make state-client`` (``npm ci``), which
``make test`` runs first.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction

from durable_streams import state
from tests.stateapp.models import ROOMS_STREAM, Flag, Member, Message, Room, room_stream
from tests.stateapp.support import (
    expected_flags,
    expected_room_stream,
    expected_rooms,
    stream_events,
)

pytestmark = pytest.mark.django_db(transaction=True)

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_TIMEOUT = 60  # seconds one node run may take at most

ROOM_COLLECTIONS = {
    "messages": {"type": "message", "primaryKey": "id"},
    "members": {"type": "member", "primaryKey": "uid"},
}
ROOMS_COLLECTIONS = {"rooms": {"type": "room", "primaryKey": "id"}}
FLAG_COLLECTIONS = {"flags": {"type": "flag", "primaryKey": "slug"}}


class Rollback(Exception):
    pass


@pytest.fixture(scope="module")
def node() -> str:
    if not (JS_DIR / "node_modules" / "@durable-streams" / "state").is_dir():
        pytest.fail(
            "tests/js/node_modules is missing: run `make state-client` (npm ci in tests/js) "
            "before running this test"
        )
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed; the State Protocol client test needs Node.js >= 18")
    return path


def _args(url: str, collections: dict, *extra: str) -> list[str]:
    return ["materialize.mjs", "--url", url, "--collections", json.dumps(collections), *extra]


def materialize(node: str, url: str, collections: dict) -> dict[str, list[dict]]:
    """The collections the TypeScript client holds after preloading ``url``."""
    run = subprocess.run(
        [node, *_args(url, collections)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    return json.loads(line)["collections"]


def as_client_rows(expected: dict[str, dict], primary_key: str) -> dict[str, dict]:
    """Database values as StreamDB rows: it sets row[primaryKey] to the event key."""
    return {key: {**value, primary_key: key} for key, value in expected.items()}


def by_key(rows: list[dict], primary_key: str) -> dict[str, dict]:
    keyed = {row[primary_key]: row for row in rows}
    assert len(keyed) == len(rows), "duplicate keys in a collection"
    return keyed


def write_history() -> tuple[Room, Room]:
    """A mix of every kind of change the hooks stream, and some that never commit."""
    lobby, side, doomed = (Room.objects.create(name=n) for n in ("lobby", "side", "doomed"))

    # Single-row inserts, updates and deletes.
    Message.objects.create(room=lobby, author="ada", body="hello", score="2.5", meta={"k": [1]})
    typo = Message.objects.create(room=lobby, author="bob", body="tpyo")
    typo.body = "typo fixed"
    typo.save()
    Message.objects.create(room=lobby, author="cy", body="deleted soon").delete()
    lobby.topic = "general"
    lobby.save()

    # Bulk operations.
    bulk = Message.objects.bulk_create(
        [Message(room=lobby, author="bulk", body=f"b{n}") for n in range(6)]
    )
    for message in bulk[:3]:
        message.likes = 7
    Message.objects.bulk_update(bulk[:3], ["likes"])
    Message.objects.filter(room=lobby, author="bulk", likes=0).update(body="set by update()")
    Message.objects.filter(pk__in=[bulk[0].pk, bulk[5].pk]).delete()

    # Moves between per-room streams (an update in one, delete + insert across two).
    mover = Message.objects.create(room=side, author="mover", body="to the lobby")
    mover.room = lobby
    mover.save()
    Message.objects.create(room=side, author="stays", body="on the side")
    Message.objects.create(room=side, author="group", body="moved by update()")
    side.messages.filter(author="group").update(room=lobby)

    # Members: a DRF serializer makes the value, a UUID field the key.
    Member.objects.create(room=lobby, user="ada", role="admin")
    bob = Member.objects.create(room=lobby, user="bob")
    bob.role = "moderator"
    bob.save()
    Member.objects.create(room=side, user="eve")

    # A cascade: the room's messages and members go with it.
    Message.objects.create(room=doomed, author="x", body="gone with the room")
    Member.objects.create(room=doomed, user="x")
    Room.objects.filter(pk=doomed.pk).delete()

    # Work that never commits.
    try:
        with transaction.atomic():
            Message.objects.create(room=lobby, author="ghost", body="rolled back")
            lobby.name = "rolled back"
            lobby.save()
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic():
        Message.objects.create(room=lobby, author="ada", body="around a savepoint")
        try:
            with transaction.atomic():
                Message.objects.create(room=lobby, author="ghost", body="savepoint")
                Member.objects.filter(user="ada").delete()
                raise Rollback
        except Rollback:
            pass

    # Flags: upserts, a renamed key.
    Flag.objects.create(slug="beta", enabled=True)
    Flag.objects.bulk_create(
        [Flag(slug="beta", rollout=25), Flag(slug="dark-mode", rollout=100)],
        update_conflicts=True,
        unique_fields=["slug"],
        update_fields=["rollout"],
    )
    renamed = Flag.objects.get(slug="dark-mode")
    renamed.slug = "dark-theme"
    renamed.save()
    return lobby, side


def assert_room_stream_matches(node: str, server: str, room: Room) -> None:
    url = f"{server}/v1/stream/{room_stream(Message(room=room))}"
    got = materialize(node, url, ROOM_COLLECTIONS)
    expected = expected_room_stream(room.pk)
    assert by_key(got["messages"], "id") == as_client_rows(expected["message"], "id")
    assert by_key(got["members"], "uid") == as_client_rows(expected["member"], "uid")


def test_the_typescript_client_materializes_exactly_the_committed_rows(node, server):
    lobby, side = write_history()
    assert Message.objects.filter(room=lobby).count() == 9  # the history did write things

    rooms = materialize(node, f"{server}/v1/stream/{ROOMS_STREAM}", ROOMS_COLLECTIONS)
    assert by_key(rooms["rooms"], "id") == as_client_rows(expected_rooms(), "id")
    assert {r["name"] for r in rooms["rooms"]} == {"lobby", "side"}

    assert_room_stream_matches(node, server, lobby)
    assert_room_stream_matches(node, server, side)

    flags = materialize(node, f"{server}/v1/stream/flags", FLAG_COLLECTIONS)
    assert by_key(flags["flags"], "slug") == as_client_rows(expected_flags(), "slug")
    assert set(by_key(flags["flags"], "slug")) == {"beta", "dark-theme"}

    # Nothing of the rolled-back work was ever written.
    everything = [e for r in (lobby, side) for e in stream_events(room_stream(Message(room=r)))]
    assert not [e for e in everything if e.get("value", {}).get("author") == "ghost"]


def test_reset_then_snapshot_rebuilds_the_typescript_clients_state(node, server):
    lobby, side = write_history()
    doomed, changed = Message.objects.filter(room=lobby).order_by("pk")[:2]
    with connection.cursor() as cursor:  # raw SQL: the hooks never see it
        cursor.execute("DELETE FROM stateapp_message WHERE id = %s", [doomed.pk])
        cursor.execute("UPDATE stateapp_message SET body = 'raw' WHERE id = %s", [changed.pk])
    url = f"{server}/v1/stream/{room_stream(Message(room=lobby))}"
    stale = by_key(materialize(node, url, ROOM_COLLECTIONS)["messages"], "id")
    assert str(doomed.pk) in stale and stale[str(changed.pk)]["body"] != "raw"

    state.snapshot(room_stream(Message(room=lobby)), reset=True)
    assert_room_stream_matches(node, server, lobby)
    assert_room_stream_matches(node, server, side)


def test_the_typescript_client_follows_live_and_awaits_its_txid(node, server):
    lobby, _ = write_history()
    url = f"{server}/v1/stream/{room_stream(Message(room=lobby))}"
    txid = state.new_txid()
    proc = subprocess.Popen(
        [node, *_args(url, ROOM_COLLECTIONS, "--await-txid", txid, "--timeout-ms", "20000")],
        cwd=JS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        preloaded = json.loads(lines.get(timeout=NODE_TIMEOUT))
        assert preloaded["phase"] == "preloaded"
        before = by_key(preloaded["collections"]["messages"], "id")
        assert before == as_client_rows(expected_room_stream(lobby.pk)["message"], "id")

        with state.txid(txid):
            try:
                with transaction.atomic():
                    Message.objects.create(room=lobby, author="ghost", body="never seen")
                    raise Rollback
            except Rollback:
                pass
            new = Message.objects.create(room=lobby, author="ada", body="live!")

        followed = json.loads(lines.get(timeout=NODE_TIMEOUT))
        assert followed["phase"] == "txid"
        after = by_key(followed["collections"]["messages"], "id")
        assert after[str(new.pk)]["body"] == "live!"
        assert after == as_client_rows(expected_room_stream(lobby.pk)["message"], "id")
        assert proc.wait(timeout=NODE_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
