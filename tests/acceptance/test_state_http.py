"""Model change streams over real HTTP: the Python HTTP consumer, and txids
sent by clients through the middleware (daphne serving tests.stateapp)."""

from __future__ import annotations

import pytest

from durable_streams import state
from tests.stateapp.models import ROOMS_STREAM, Message, Room, room_stream
from tests.stateapp.support import expected_room_stream, expected_rooms, stream_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_follow_url_catches_up_then_sees_each_commit_live(server):
    Room.objects.create(name="first")
    url = f"{server}/v1/stream/{ROOMS_STREAM}"
    follower = state.follow_url(url, timeout=30)
    current = next(follower)
    while not current.up_to_date:  # bounded by the stream's length
        current = next(follower)
    assert current.get_type("room") == expected_rooms()

    with state.txid("from-the-shell"):
        Room.objects.create(name="second")
    for _ in range(20):  # each long-poll answers within the server's 2 s timeout
        current = next(follower)
        if current.has_txid("from-the-shell"):
            break
    assert current.get_type("room") == expected_rooms()
    assert {r["name"] for r in current.list("room")} == {"first", "second"}
    follower.close()


def test_materialize_over_http_equals_materialize_in_process(server):
    room = Room.objects.create(name="r")
    Message.objects.create(room=room, author="a", body="b")
    Message.objects.create(room=room, author="a", body="c").delete()
    path = room_stream(Message(room=room))
    in_process = state.materialize(path)
    over_http = state.materialize(f"{server}/v1/stream/{path}")
    assert in_process.get_type("message") == expected_room_stream(room.pk)["message"]
    assert over_http.get_type("message") == in_process.get_type("message")
    assert over_http.offset == in_process.offset
    assert over_http.up_to_date and in_process.up_to_date


def test_reading_a_missing_stream_over_http_raises_with_the_status(server):
    with pytest.raises(state.StreamReadError) as caught:
        state.catch_up_url(f"{server}/v1/stream/chat/room-424242")
    assert caught.value.status == 404


def test_a_txid_sent_with_a_request_is_stamped_on_its_events_and_echoed(server, http):
    room = Room.objects.create(name="r")
    url = f"{server}/state-test/rooms/{room.pk}/messages"
    response = http.post(url, json={"author": "ada", "body": "hi"}, headers={"X-Txid": "tx-77"})
    assert response.status_code == 201
    assert response.headers["X-Txid"] == "tx-77"
    assert response.json()["txid"] == "tx-77"
    (event,) = stream_events(room_stream(Message(room=room)))
    assert event["headers"]["txid"] == "tx-77"
    assert event["key"] == str(response.json()["id"])


def test_a_request_without_a_txid_gets_one_it_can_await(server, http):
    room = Room.objects.create(name="r")
    url = f"{server}/state-test/rooms/{room.pk}/messages"
    response = http.post(url, json={"author": "ada", "body": "hi"})
    assert response.status_code == 201
    txid = response.headers["X-Txid"]
    assert len(txid) == 36
    follower = state.catch_up_url(f"{server}/v1/stream/{room_stream(Message(room=room))}")
    assert follower.has_txid(txid)


def test_a_malformed_txid_is_a_400_and_writes_nothing(server, http):
    room = Room.objects.create(name="r")
    url = f"{server}/state-test/rooms/{room.pk}/messages"
    response = http.post(url, json={"author": "a", "body": "b"}, headers={"X-Txid": "x" * 200})
    assert response.status_code == 400
    assert "invalid X-Txid header" in response.text
    assert not Message.objects.exists()


def test_a_request_that_rolls_back_leaves_no_event(server, http):
    room = Room.objects.create(name="r")
    url = f"{server}/state-test/rooms/{room.pk}/messages"
    response = http.post(url, json={"author": "a", "body": "no", "fail": True})
    assert response.status_code == 409
    ok = http.post(url, json={"author": "a", "body": "yes"}, headers={"X-Txid": "ok-1"})
    assert ok.status_code == 201
    events = stream_events(room_stream(Message(room=room)))
    assert [(e["value"]["body"], e["headers"]["txid"]) for e in events] == [("yes", "ok-1")]
