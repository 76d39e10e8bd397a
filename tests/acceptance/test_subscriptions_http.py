"""Subscriptions over real HTTP (spec 6 and 7): pull-wake claims, fencing,
leases, exactly-once wakes across processes, and bad input."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from ..support import ROOT, unique

pytestmark = pytest.mark.django_db

JSON = {"Content-Type": "application/json"}


class Api:
    """The control routes of one server."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(timeout=20)

    def url(self, path: str) -> str:
        return f"{self.base}/v1/stream/{path}"

    def sub(self, sub_id: str, action: str = "") -> str:
        return self.url(f"__ds/subscriptions/{sub_id}" + (f"/{action}" if action else ""))

    def create_stream(self, path: str, body: str | None = None) -> None:
        r = self.client.put(self.url(path), headers=JSON, content=body)
        assert r.status_code in (200, 201), r.text

    def append(self, path: str, value: object) -> str:
        r = self.client.post(self.url(path), headers=JSON, json=value)
        assert r.status_code in (200, 204), r.text
        return r.headers["Stream-Next-Offset"]

    def events(self, path: str) -> list[dict]:
        r = self.client.get(self.url(path), params={"offset": "-1"})
        assert r.status_code == 200, r.text
        return r.json()

    def put_sub(self, sub_id: str, **config) -> httpx.Response:
        return self.client.put(self.sub(sub_id), headers=JSON, json=config)

    def get_sub(self, sub_id: str) -> dict:
        r = self.client.get(self.sub(sub_id))
        assert r.status_code == 200, r.text
        return r.json()

    def acked(self, sub_id: str) -> dict[str, str]:
        return {s["path"]: s["acked_offset"] for s in self.get_sub(sub_id)["streams"]}

    def claim(self, sub_id: str, worker: str = "w1") -> httpx.Response:
        return self.client.post(self.sub(sub_id, "claim"), headers=JSON, json={"worker": worker})

    def ack(self, sub_id: str, token: str, body: dict, action: str = "ack") -> httpx.Response:
        headers = {**JSON, "Authorization": f"Bearer {token}"}
        return self.client.post(self.sub(sub_id, action), headers=headers, json=body)


def wait_for(check, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def wakes_of(api: Api, wake_stream: str, sub_id: str) -> list[dict]:
    return [e for e in api.events(wake_stream) if e.get("subscription_id") == sub_id]


@pytest.fixture
def api(server) -> Api:
    return Api(server)


def pull_sub(api: Api, lease_ttl_ms: int = 30_000) -> tuple[str, str, str]:
    """A pull-wake subscription on ``<prefix>/*``: (id, prefix, wake stream)."""
    sub_id, prefix, wake = unique("sub"), unique("ev"), unique("wake")
    api.create_stream(wake, "[]")
    r = api.put_sub(
        sub_id, type="pull-wake", pattern=f"{prefix}/*", wake_stream=wake, lease_ttl_ms=lease_ttl_ms
    )
    assert r.status_code == 201, r.text
    return sub_id, prefix, wake


def test_pull_wake_claim_ack_done_and_next_wake(api):
    sub_id, prefix, wake = pull_sub(api)
    api.create_stream(f"{prefix}/a", '{"n": 1}')
    event = wait_for(lambda: wakes_of(api, wake, sub_id))[0]
    assert (event["type"], event["stream"], event["generation"]) == ("wake", f"{prefix}/a", 1)

    r = api.claim(sub_id, "worker-1")
    assert r.status_code == 200, r.text
    claim = r.json()
    assert claim["generation"] == 1 and claim["lease_ttl_ms"] == 30_000
    (stream,) = claim["streams"]
    assert stream["has_pending"] and stream["acked_offset"] < stream["tail_offset"]

    busy = api.claim(sub_id, "worker-2")
    assert busy.status_code == 409
    assert busy.json()["error"] == {
        "code": "ALREADY_CLAIMED",
        "message": "another worker holds the lease",
        "current_holder": "worker-1",
        "generation": 1,
    }

    # A heartbeat (no done) acks part of the work and keeps the claim.
    body = {"wake_id": claim["wake_id"], "generation": 1}
    assert api.ack(sub_id, claim["token"], body).json() == {"ok": True, "next_wake": False}
    # More work arrives while the claim is held: done says a new wake follows.
    api.append(f"{prefix}/a", {"n": 2})
    done = {
        **body,
        "acks": [{"stream": f"{prefix}/a", "offset": stream["tail_offset"]}],
        "done": True,
    }
    assert api.ack(sub_id, claim["token"], done).json() == {"ok": True, "next_wake": True}
    assert api.acked(sub_id)[f"{prefix}/a"] == stream["tail_offset"]
    events = wait_for(lambda: len(wakes_of(api, wake, sub_id)) == 2 and wakes_of(api, wake, sub_id))
    assert [e["generation"] for e in events] == [1, 2]

    second = api.claim(sub_id, "worker-2").json()
    assert second["generation"] == 2
    r = api.ack(sub_id, second["token"], {"wake_id": second["wake_id"], "generation": 2}, "release")
    assert r.status_code == 204
    # Work remains after the release: another wake event for a later claim.
    events = wait_for(lambda: len(wakes_of(api, wake, sub_id)) == 3 and wakes_of(api, wake, sub_id))
    assert events[-1]["generation"] == 3


def test_stale_or_forged_acks_releases_and_callbacks_move_nothing(api):
    sub_id, prefix, wake = pull_sub(api)
    api.create_stream(f"{prefix}/a", '{"n": 1}')
    wait_for(lambda: wakes_of(api, wake, sub_id))
    claim = api.claim(sub_id).json()
    tail = claim["streams"][0]["tail_offset"]
    body = {
        "wake_id": claim["wake_id"],
        "generation": claim["generation"],
        "acks": [{"stream": f"{prefix}/a", "offset": tail}],
        "done": True,
    }
    assert api.ack(sub_id, claim["token"], body).status_code == 200
    api.append(f"{prefix}/a", {"n": 2})
    wait_for(lambda: len(wakes_of(api, wake, sub_id)) == 2)
    before = api.acked(sub_id)

    new = api.claim(sub_id).json()
    new_tail = new["streams"][0]["tail_offset"]
    stale_body = {**body, "acks": [{"stream": f"{prefix}/a", "offset": new_tail}]}
    for action in ("ack", "release"):
        payload = stale_body if action == "ack" else {"wake_id": body["wake_id"], "generation": 1}
        r = api.ack(sub_id, claim["token"], payload, action)  # the old wake's token
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "FENCED"
    # The current token with the old wake id or generation is fenced too.
    for wrong in ({"wake_id": claim["wake_id"]}, {"generation": 1}):
        r = api.ack(sub_id, new["token"], {**stale_body, "wake_id": new["wake_id"], **wrong})
        assert r.json()["error"]["code"] == "FENCED"
    forged = new["token"][:-3] + ("AAA" if not new["token"].endswith("AAA") else "BBB")
    r = api.ack(sub_id, forged, {**stale_body, "wake_id": new["wake_id"], "generation": 2})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
    r = api.client.post(api.sub(sub_id, "ack"), headers=JSON, json=stale_body)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
    # A pull-wake token is no webhook callback token, and vice versa.
    r = api.ack(sub_id, new["token"], {"wake_id": new["wake_id"], "generation": 2}, "callback")
    assert r.status_code == 400
    assert api.acked(sub_id) == before


def test_lease_expiry_clears_the_holder_and_wakes_again(api):
    sub_id, prefix, wake = pull_sub(api, lease_ttl_ms=1000)
    api.create_stream(f"{prefix}/a", '{"n": 1}')
    wait_for(lambda: wakes_of(api, wake, sub_id))
    claim = api.claim(sub_id, "sleepy").json()
    assert claim["generation"] == 1
    events = wait_for(lambda: len(wakes_of(api, wake, sub_id)) == 2 and wakes_of(api, wake, sub_id))
    assert events[-1]["generation"] == 2
    before = api.acked(sub_id)
    tail = claim["streams"][0]["tail_offset"]
    late = {
        "wake_id": claim["wake_id"],
        "generation": 1,
        "acks": [{"stream": f"{prefix}/a", "offset": tail}],
        "done": True,
    }
    r = api.ack(sub_id, claim["token"], late)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "FENCED")
    assert api.acked(sub_id) == before
    # The holder was cleared: another worker claims the new generation.
    again = api.claim(sub_id, "awake")
    assert again.status_code == 200 and again.json()["generation"] == 2


def test_create_reconfirm_conflict_delete_and_recreate(api):
    sub_id, prefix, wake = unique("sub"), unique("ev"), unique("wake")
    config = {"type": "pull-wake", "streams": [f"{prefix}/b", f"{prefix}/a"], "wake_stream": wake}
    assert api.put_sub(sub_id, **config).status_code == 201
    same = {**config, "streams": [f"{prefix}/a", f"/{prefix}/b/", f"{prefix}/a"]}
    r = api.put_sub(sub_id, **same)
    assert r.status_code == 200
    body = r.json()
    assert (body["id"], body["subscription_id"], body["type"]) == (sub_id, sub_id, "pull-wake")
    assert body["lease_ttl_ms"] == 30_000 and body["status"] == "active"
    assert [s["path"] for s in body["streams"]] == [f"{prefix}/a", f"{prefix}/b"]
    r = api.put_sub(sub_id, **config, description="changed")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "SUBSCRIPTION_ALREADY_EXISTS")

    api.create_stream(wake, "[]")
    api.create_stream(f"{prefix}/a", '{"n": 1}')
    api.append(f"{prefix}/a", {"n": 2})
    wait_for(lambda: wakes_of(api, wake, sub_id))
    old = api.claim(sub_id).json()
    assert api.client.delete(api.sub(sub_id)).status_code == 204
    assert api.client.get(api.sub(sub_id)).status_code == 404
    assert api.client.delete(api.sub(sub_id)).status_code == 204  # idempotent
    r = api.ack(sub_id, old["token"], {"wake_id": old["wake_id"], "generation": 1, "done": True})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "SUBSCRIPTION_NOT_FOUND")

    # A new subscription under the same id starts afresh; old tokens stay dead.
    assert api.put_sub(sub_id, **config, description="new").status_code == 201
    api.append(f"{prefix}/a", {"n": 3})
    wait_for(lambda: len(wakes_of(api, wake, sub_id)) == 2)
    new = api.claim(sub_id).json()
    assert new["generation"] == 1
    assert new["streams"][0]["acked_offset"] == "0000000000000000_0000000000000002"
    r = api.ack(sub_id, old["token"], {"wake_id": new["wake_id"], "generation": 1})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")


def test_backfill_links_existing_streams_at_their_tail_and_new_ones_before_their_append(api):
    prefix, wake, sub_id = unique("ev"), unique("wake"), unique("sub")
    api.create_stream(wake, "[]")
    api.create_stream(f"{prefix}/old", '[{"n": 1}, {"n": 2}]')
    api.create_stream(f"{prefix}/deeper/no", '{"n": 1}')
    r = api.put_sub(sub_id, type="pull-wake", pattern=f"{prefix}/*", wake_stream=wake)
    links = {s["path"]: s for s in r.json()["streams"]}
    assert list(links) == [f"{prefix}/old"]
    assert links[f"{prefix}/old"]["link_type"] == "glob"
    assert links[f"{prefix}/old"]["acked_offset"] == "0000000000000000_0000000000000002"
    time.sleep(0.3)
    assert wakes_of(api, wake, sub_id) == []  # history is not replayed

    api.create_stream(f"{prefix}/new", '[{"n": 1}, {"n": 2}, {"n": 3}]')
    wait_for(lambda: wakes_of(api, wake, sub_id))
    claim = api.claim(sub_id).json()
    streams = {s["path"]: s for s in claim["streams"]}
    assert streams[f"{prefix}/new"]["acked_offset"] == "0000000000000000_0000000000000000"
    assert streams[f"{prefix}/new"]["tail_offset"] == "0000000000000000_0000000000000003"
    assert not streams[f"{prefix}/old"]["has_pending"]


def test_explicit_links_add_remove_and_glob_precedence(api):
    prefix, wake, sub_id = unique("ev"), unique("wake"), unique("sub")
    api.create_stream(f"{prefix}/g", '{"n": 1}')
    r = api.put_sub(
        sub_id, type="pull-wake", pattern=f"{prefix}/*", streams=["other/x"], wake_stream=wake
    )
    assert r.status_code == 201
    r = api.client.post(
        api.sub(sub_id, "streams"), headers=JSON, json={"streams": [f"{prefix}/g", "other/y"]}
    )
    assert r.status_code == 204
    types = {s["path"]: s["link_type"] for s in api.get_sub(sub_id)["streams"]}
    assert types == {f"{prefix}/g": "explicit", "other/x": "explicit", "other/y": "explicit"}
    for path in (f"{prefix}/g", "other/y", "never/linked"):
        encoded = httpx.URL(api.sub(sub_id, "streams/") + path.replace("/", "%2F"))
        assert api.client.delete(encoded).status_code == 204
    types = {s["path"]: s["link_type"] for s in api.get_sub(sub_id)["streams"]}
    assert types == {f"{prefix}/g": "glob", "other/x": "explicit"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "SUB", b"{", 400, "INVALID_REQUEST"),
        ("PUT", "SUB", b'{"type": "pull-wake"}', 400, "INVALID_REQUEST"),
        (
            "PUT",
            "SUB",
            b'{"type":"pull-wake","pattern":"a/b*","wake_stream":"w"}',
            400,
            "INVALID_REQUEST",
        ),
        (
            "PUT",
            "SUB",
            b'{"type":"pull-wake","streams":["a"],"wake_stream":"w","x":1}',
            400,
            "INVALID_REQUEST",
        ),
        (
            "PUT",
            "SUB",
            b'{"type":"pull-wake","streams":["a"],"wake_stream":"w","lease_ttl_ms":5}',
            400,
            "INVALID_REQUEST",
        ),
        (
            "PUT",
            "SUB",
            b'{"type":"webhook","streams":["a"],"webhook":{"url":"http://10.0.0.1/h"}}',
            400,
            # WEBHOOK_URL_REJECTED with the webhook half installed; without it
            # webhook subscriptions are refused altogether.
            ("WEBHOOK_URL_REJECTED", "INVALID_REQUEST"),
        ),
        ("GET", "SUB", b"", 404, "SUBSCRIPTION_NOT_FOUND"),
        ("POST", "SUB/streams", b'{"streams": []}', 400, "INVALID_REQUEST"),
        ("POST", "SUB/streams", b'{"streams": ["a"]}', 404, "SUBSCRIPTION_NOT_FOUND"),
        ("POST", "SUB/claim", b'{"worker": 5}', 400, "INVALID_REQUEST"),
        ("POST", "SUB/claim", b'{"worker": "w"}', 404, "SUBSCRIPTION_NOT_FOUND"),
        ("POST", "SUB/ack", b"{}", 401, "TOKEN_INVALID"),
        ("POST", "SUB/callback", b"{}", 401, "TOKEN_INVALID"),
        ("POST", "SUB/unknown", b"{}", 404, "SUBSCRIPTION_NOT_FOUND"),
        ("PATCH", "SUB", b"{}", 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "", b"", 404, "SUBSCRIPTION_NOT_FOUND"),
    ],
)
def test_bad_control_requests_are_4xx_with_their_code(api, method, path, body, status, code):
    sub_path = f"__ds/subscriptions/{unique('none')}"
    url = api.url(path.replace("SUB", sub_path) if path else "__ds/anything")
    r = api.client.request(method, url, headers=JSON, content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] in ((code,) if isinstance(code, str) else code)
    if method == "PUT":
        assert api.client.get(url).status_code == 404  # nothing was stored


def test_bad_acks_are_refused_and_move_nothing(api):
    sub_id, prefix, wake = pull_sub(api)
    api.create_stream(f"{prefix}/a", '[{"n": 1}, {"n": 2}]')
    wait_for(lambda: wakes_of(api, wake, sub_id))
    claim = api.claim(sub_id).json()
    before = api.acked(sub_id)
    good = {"stream": f"{prefix}/a", "offset": "0000000000000000_0000000000000001"}
    cases = [
        ([{"stream": f"{prefix}/a", "offset": "garbage"}], 400),
        ([{"stream": f"{prefix}/a", "offset": "-1"}], 400),
        ([good, {"stream": f"{prefix}/a", "offset": "0000000000000000_0000000000000009"}], 409),
        ([good, {"stream": f"{prefix}/zz", "offset": "0000000000000000_0000000000000001"}], 409),
        ([{"stream": f"{prefix}/a", "offset": 12}], 400),
        ("not a list", 400),
    ]
    for acks, status in cases:
        body = {"wake_id": claim["wake_id"], "generation": 1, "acks": acks, "done": True}
        r = api.ack(sub_id, claim["token"], body)
        assert r.status_code == status, (acks, r.text)
        assert r.json()["error"]["code"] in ("INVALID_OFFSET", "INVALID_REQUEST")
        assert api.acked(sub_id) == before
    # The claim survived every refusal.
    r = api.ack(sub_id, claim["token"], {"wake_id": claim["wake_id"], "generation": 1})
    assert r.status_code == 200


def test_reserved_prefix_never_becomes_a_stream(api):
    for method in ("PUT", "POST", "GET", "DELETE"):
        r = api.client.request(method, api.url("__ds/streams/x"), headers=JSON, content=b"{}")
        assert r.status_code in (404, 405)
        assert "Stream-Next-Offset" not in r.headers


@pytest.fixture
def deliver_worker(child_env, tmp_path):
    ready = tmp_path / "ready"
    log = open(tmp_path / "deliver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "streams", "deliver", "--ready-file", str(ready)],
        cwd=ROOT,
        env=child_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(ready.exists, timeout=60)
    yield proc
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_two_servers_and_a_worker_issue_each_wake_once(ds_server, second_server, deliver_worker):
    apis = [Api(ds_server.url), Api(second_server.url)]
    sub_id, prefix, wake = pull_sub(apis[0])
    streams = [f"{prefix}/s{i}" for i in range(4)]
    for path in streams:
        apis[1].create_stream(path)
    for round_ in range(1, 5):
        # A burst of appends through both servers: every engine is notified.
        for i in range(12):
            apis[i % 2].append(streams[i % len(streams)], {"round": round_, "i": i})

        def arrived(n: int = round_) -> list[dict]:
            events = wakes_of(apis[0], wake, sub_id)
            return events if len(events) >= n else []

        event = wait_for(arrived)[-1]
        claim = apis[round_ % 2].claim(sub_id, f"w{round_}").json()
        assert claim["generation"] == event["generation"] == round_
        acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in claim["streams"]]
        body = {"wake_id": claim["wake_id"], "generation": round_, "acks": acks, "done": True}
        assert apis[round_ % 2].ack(sub_id, claim["token"], body).json()["next_wake"] is False
    time.sleep(1.0)  # any duplicate wake would land by now
    generations = [e["generation"] for e in wakes_of(apis[0], wake, sub_id)]
    assert generations == [1, 2, 3, 4]


def test_policy_decides_who_may_subscribe_and_claim(server_factory):
    # DEBUG is off in the servers: the default policy refuses every operation.
    refusing = server_factory(DS_TEST_POLICY="durable_streams.permissions.DebugOnlyPolicy")
    api = Api(refusing.url)
    sub_id = unique("sub")
    body = {"type": "pull-wake", "streams": ["a"], "wake_stream": "w"}
    r = api.put_sub(sub_id, **body)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert api.client.get(api.sub(sub_id)).status_code == 403
    assert api.claim(sub_id).status_code == 403
    # Acks are authorised by their token, not by the policy.
    r = api.ack(sub_id, "forged", {"wake_id": "w", "generation": 1})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
    refusing.stop()
