"""The stream admin against real Postgres: the list (columns, search, filters,
cheap queries), the stream page (content by offset in every rendering,
producers, forks, live tail wiring) and the actions with their permissions."""

from __future__ import annotations

import html
import json
import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from durable_streams import api, offsets, storage
from durable_streams.admin import PAGE_BYTES, EstimatedCountPaginator
from durable_streams.models import Stream
from durable_streams.producers import Producer

pytestmark = pytest.mark.django_db

LIST = "/admin/durable_streams/stream/"


def name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def page_of(path: str) -> str:
    return reverse("admin:durable_streams_stream_change", args=[Stream.objects.get(path=path).pk])


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def row_of(body: str, path: str) -> str:
    """The changelist row of ``path`` as text without tags."""
    match = re.search(rf"<tr>.*?>{re.escape(path)}</a></th>(.*?)</tr>", body, re.S)
    assert match, f"no row for {path}"
    return re.sub(r"<[^>]+>", "|", match.group(1))


# --- the list --------------------------------------------------------------------------


def test_the_list_shows_each_stream_s_facts(admin_client):
    # One unique prefix, searched for: other tests' streams may fill the first page.
    tag = name("facts")
    chat, log, blob, fork = (f"{tag}/{kind}" for kind in ("chat", "log", "blob", "fork"))
    api.create_stream(chat, content_type="application/json", data=[{"a": 1}, {"b": 2}, {"c": 3}])
    api.create_stream(log, content_type="text/plain", data="hello", ttl_seconds=60)
    api.create_stream(
        blob, content_type="application/octet-stream", data=b"\x00" * 1500, closed=True
    )
    storage.create_stream(fork, content_type=None, fork=storage.ForkSpec(chat, 2))
    body = text(admin_client.get(LIST, {"q": f"{tag}/"}))

    chat_row = row_of(body, chat)
    assert "application/json" in chat_row and "|3|" in chat_row  # messages, not bytes
    assert offsets.encode(3) in chat_row and "open" in chat_row and "1 fork" in chat_row
    log_row = row_of(body, log)
    assert "|5 B|" in log_row and "TTL 60s" in log_row
    blob_row = row_of(body, blob)
    assert "|1,500 B|" in blob_row and "closed" in blob_row and "never" in blob_row
    assert f"from |{chat}|" in row_of(body, fork) and offsets.encode(2) in row_of(body, fork)


def test_search_is_by_path_prefix(admin_client):
    tag = uuid.uuid4().hex[:8]
    api.create_stream(f"rooms/{tag}/a")
    api.create_stream(f"rooms/{tag}/b")
    api.create_stream(f"other/{tag}")
    body = text(admin_client.get(LIST, {"q": f"rooms/{tag}/"}))
    assert f"rooms/{tag}/a" in body and f"rooms/{tag}/b" in body
    assert f"other/{tag}" not in body


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ({"kind": "json"}, {"json"}),
        ({"kind": "text"}, {"text", "expired", "deleted"}),
        ({"kind": "binary"}, {"binary", "closed"}),
        ({"state": "open"}, {"json", "text", "binary"}),
        ({"state": "closed"}, {"closed"}),
        ({"state": "expired"}, {"expired"}),
        ({"state": "deleted"}, {"deleted"}),
    ],
)
def test_filters_by_type_and_state(admin_client, query, shown):
    tag = uuid.uuid4().hex[:8]
    paths = {k: f"f{tag}/{k}" for k in ("json", "text", "binary", "closed", "expired", "deleted")}
    api.create_stream(paths["json"], content_type="application/json; charset=utf-8")
    api.create_stream(paths["text"], content_type="text/markdown")
    api.create_stream(paths["binary"], content_type="image/png")
    api.create_stream(paths["closed"], content_type="application/octet-stream", closed=True)
    api.create_stream(paths["expired"], content_type="text/plain", ttl_seconds=0)
    api.create_stream(paths["deleted"], content_type="text/plain")
    storage.create_stream(name(), content_type=None, fork=storage.ForkSpec(paths["deleted"]))
    api.delete(paths["deleted"])  # soft: a fork still reads it
    body = text(admin_client.get(LIST, {**query, "q": f"f{tag}/"}))
    assert {k for k, p in paths.items() if f">{p}</a>" in body} == shown


def _list_queries(client) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(LIST).status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def test_the_list_never_reads_appends_and_its_queries_do_not_grow_with_rows(admin_client):
    for i in range(3):
        api.create_stream(name(), content_type="application/json", data=[{"i": i}] * 5)
    few = _list_queries(admin_client)
    for i in range(40):
        path = name()
        api.create_stream(path, content_type="application/json", data=[{"i": i}] * 5)
        storage.create_stream(name("f"), content_type=None, fork=storage.ForkSpec(path))
    many = _list_queries(admin_client)
    assert len(many) == len(few)
    assert not [q for q in many if "durable_streams_segment" in q]


def test_big_unfiltered_lists_are_counted_by_estimate_filtered_ones_exactly():
    for _ in range(5):
        api.create_stream(name())
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE durable_streams_stream")

    class Small(EstimatedCountPaginator):
        ESTIMATE_ABOVE = 0  # treat this test table as "big"

    with CaptureQueriesContext(connection) as captured:
        estimate = Small(Stream.objects.order_by("path"), 50).count
    assert not [q for q in captured.captured_queries if "__count" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'durable_streams_stream'"
        )
        assert estimate == cursor.fetchone()[0]
    filtered = Stream.objects.filter(path__startswith="no-such-prefix-").order_by("path")
    assert Small(filtered, 50).count == 0


# --- the stream page ------------------------------------------------------------------------


def test_json_content_is_pretty_printed_with_offsets(admin_client):
    path = name()
    api.create_stream(path, content_type="application/json", data=[{"user": "ada", "n": [1, 2]}])
    body = text(admin_client.get(page_of(path)))
    assert 'id="ds-json-messages"' in body
    assert '"user": "ada"' in body and '"n": [\n    1,' in body
    assert offsets.encode(0) in body


def test_state_protocol_events_are_a_table_of_type_key_operation_value(admin_client):
    path = name()
    events = [
        {"headers": {"control": "snapshot-start"}},
        {"type": "user", "key": "u1", "value": {"name": "Ada"}, "headers": {"operation": "insert"}},
        {
            "type": "user",
            "key": "u1",
            "value": {"name": "Ada L."},
            "old_value": {"name": "Ada"},
            "headers": {"operation": "update", "txid": "t-1"},
        },
        {"type": "user", "key": "u1", "headers": {"operation": "delete"}},
    ]
    api.create_stream(path, content_type="application/json", data=events)
    body = text(admin_client.get(page_of(path)))
    table = body[body.index('id="ds-state-events"') :].split("</table>")[0]
    rows = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]
    ]
    assert rows[0] == f"{offsets.encode(0)} control: snapshot-start"
    assert rows[1].startswith(f'{offsets.encode(1)} user u1 insert {{ "name": "Ada" }}')
    assert rows[2].startswith(f'{offsets.encode(2)} user u1 update {{ "name": "Ada L." }}')
    assert rows[2].endswith('{ "name": "Ada" }')
    assert rows[3].startswith(f"{offsets.encode(3)} user u1 delete")


def test_text_content_is_shown_as_text(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain; charset=utf-8", data="line one\nzwei <b>")
    body = text(admin_client.get(page_of(path)))
    assert '<pre id="ds-text">line one\nzwei <b></pre>' in body


def test_binary_content_is_a_hex_dump_paged_by_offset(admin_client):
    path = name()
    data = bytes(range(256)) * ((PAGE_BYTES // 256) + 2)  # more than one page
    api.create_stream(path, content_type="application/octet-stream", data=data)
    first = text(admin_client.get(page_of(path)))
    assert "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................" in first
    assert "00000040  40 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f  @ABCDEFGHIJKLMNO" in first
    next_offset = offsets.encode(PAGE_BYTES)
    assert f'href="?offset={next_offset}"' in first
    second = text(admin_client.get(page_of(path), {"offset": next_offset}))
    assert f"{PAGE_BYTES:08x}  00 01 02" in second
    assert "(end of stream)" in second
    assert "00000000  00 01" not in second


def test_viewing_a_stream_never_slides_its_ttl(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain", data="x", ttl_seconds=3600)
    before = Stream.objects.get(path=path).last_access_at
    text(admin_client.get(page_of(path)))
    assert Stream.objects.get(path=path).last_access_at == before


def test_a_bad_offset_is_a_message_not_an_error(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain", data="abc")
    for bad in ("nonsense", offsets.encode(99)):
        body = text(admin_client.get(page_of(path), {"offset": bad}))
        assert 'class="errornote"' in body


def test_producers_fork_source_and_forks_are_shown(admin_client):
    src, child = name("src"), name("child")
    api.create_stream(src, content_type="text/plain", data="abc")
    api.append(src, "d", producer=Producer("worker-7", 2, 0))
    storage.create_stream(child, content_type=None, fork=storage.ForkSpec(src, 2))
    source_page = text(admin_client.get(page_of(src)))
    assert "<code>worker-7</code></td><td>2</td><td>0</td>" in source_page
    assert f">{child}</a>" in source_page[source_page.index('id="ds-forks"') :]
    fork_page = text(admin_client.get(page_of(child)))
    assert f'id="ds-fork-source">{src}</a> at <code>{offsets.encode(2)}</code>' in fork_page


def test_the_live_tail_listens_on_the_stream_s_sse_url_from_its_tail(admin_client):
    path = name("rooms/live")
    api.create_stream(path, content_type="application/json", data=[1, 2])
    body = admin_client.get(page_of(path)).content.decode()
    config = json.loads(
        re.search(r'id="ds-live-config" type="application/json">(.*?)</script>', body).group(1)
    )
    assert config == {
        "url": reverse("durable_streams:stream", args=[path]),
        "offset": offsets.encode(2),
        "kind": "json",
    }
    assert "new EventSource(url)" in body


def test_unknown_or_malformed_stream_ids_are_404(admin_client):
    assert admin_client.get(LIST + "999999999/change/").status_code == 404
    assert admin_client.get(LIST + "not-a-number/change/").status_code == 404


def test_a_closed_stream_has_no_live_tail(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain", data="done", closed=True)
    body = text(admin_client.get(page_of(path)))
    assert "ds-live-config" not in body and "done" in body


# --- actions -------------------------------------------------------------------------------


def test_create_action_creates_the_stream_with_its_content(admin_client):
    path = name("made")
    response = admin_client.post(
        reverse("admin:durable_streams_stream_create"),
        {
            "path": path,
            "content_type": "application/json",
            "ttl_seconds": "120",
            "data": '[{"a":1},{"b":2}]',
        },
    )
    assert response.status_code == 302
    assert response["Location"] == page_of(path)
    messages, _ = api.read_json(path)
    assert messages == [{"a": 1}, {"b": 2}]
    assert api.head(path).ttl_seconds == 120


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"path": "../up"}, "invalid stream path"),
        ({"path": "x", "content_type": "not a type"}, "not a valid media type"),
        ({"path": "x", "data": "{broken"}, "JSON"),
        ({"path": "x", "ttl_seconds": "5", "expires_at": "2030-01-01 00:00"}, "not both"),
    ],
)
def test_create_action_reports_bad_input_on_the_form(admin_client, fields, error):
    data = {"content_type": "application/json", **fields}
    if data["path"] == "x":
        data["path"] = name()
    response = admin_client.post(reverse("admin:durable_streams_stream_create"), data)
    assert response.status_code == 200
    assert error.lower() in text(response).lower()
    assert not Stream.objects.filter(path=data["path"]).exists()


def test_create_action_reports_a_conflicting_existing_stream(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain")
    response = admin_client.post(
        reverse("admin:durable_streams_stream_create"),
        {"path": path, "content_type": "application/json"},
    )
    assert "different configuration" in text(response)


def test_create_and_fork_pages_show_their_form_fields_and_button(admin_client):
    src = name()
    api.create_stream(src, content_type="text/plain", data="abc")
    pk = Stream.objects.get(path=src).pk
    create = admin_client.get(reverse("admin:durable_streams_stream_create"))
    fork = admin_client.get(reverse("admin:durable_streams_stream_fork", args=[pk]))
    for response, fields, button in (
        (create, ["path", "content_type", "ttl_seconds", "expires_at", "data"], "Create"),
        (fork, ["path", "offset"], "Fork"),
    ):
        body = response.content.decode()
        assert response.status_code == 200
        assert "admin/css/forms.css" in body
        for field in fields:
            assert f'id="id_{field}"' in body, field
        assert f'<input type="submit" value="{button}" class="default">' in body
    assert f"<code>{src}</code>'s data up to the fork point" in fork.content.decode()


def test_close_action_closes_the_stream(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain", data="x")
    pk = Stream.objects.get(path=path).pk
    response = admin_client.post(reverse("admin:durable_streams_stream_close", args=[pk]))
    assert response.status_code == 302
    assert api.head(path).closed


def test_fork_action_forks_at_the_given_offset(admin_client):
    src, child = name(), name("child")
    api.create_stream(src, content_type="text/plain", data="abcdef")
    pk = Stream.objects.get(path=src).pk
    response = admin_client.post(
        reverse("admin:durable_streams_stream_fork", args=[pk]),
        {"path": child, "offset": offsets.encode(3)},
    )
    assert response.status_code == 302
    assert api.read(child).body == b"abc"


def test_delete_action_deletes_the_stream_and_its_data(admin_client):
    path = name()
    api.create_stream(path, content_type="text/plain", data="x")
    pk = Stream.objects.get(path=path).pk
    response = admin_client.post(reverse("admin:durable_streams_stream_remove", args=[pk]))
    assert response.status_code == 302
    assert response["Location"] == LIST
    assert not Stream.objects.filter(path=path).exists()


def test_actions_are_post_only(admin_client):
    path = name()
    api.create_stream(path)
    pk = Stream.objects.get(path=path).pk
    for action in ("close", "remove", "snapshot"):
        url = reverse(f"admin:durable_streams_stream_{action}", args=[pk])
        assert admin_client.get(url).status_code == 405
    assert not api.head(path).closed


def test_snapshot_action_writes_the_registered_models_rows(admin_client):
    from tests.stateapp.models import ROOMS_STREAM, Room

    Room.objects.create(name="lobby")  # streams an insert into chat/rooms
    pk = Stream.objects.get(path=ROOMS_STREAM).pk
    page = text(admin_client.get(page_of(ROOMS_STREAM)))
    assert "Snapshot of registered models" in page
    response = admin_client.post(
        reverse("admin:durable_streams_stream_snapshot", args=[pk]), {"reset": "1"}
    )
    assert response.status_code == 302
    messages, _ = api.read_json(ROOMS_STREAM)
    controls = [m["headers"].get("control") or m["headers"]["operation"] for m in messages]
    assert controls == ["insert", "reset", "snapshot-start", "insert", "snapshot-end"]
    assert messages[3]["value"]["name"] == "lobby"


def test_snapshot_all_writes_every_registered_stream(admin_client):
    from tests.stateapp.models import ROOMS_STREAM, Room

    Room.objects.create(name="hall")
    response = admin_client.post(reverse("admin:durable_streams_stream_snapshot_all"))
    assert response.status_code == 302
    messages, _ = api.read_json(ROOMS_STREAM)
    assert [m["headers"].get("control") for m in messages[-3:]] == [
        "snapshot-start",
        None,
        "snapshot-end",
    ]


# --- permissions -------------------------------------------------------------------------


@pytest.fixture
def viewer(client, django_user_model):
    """A staff user who may only view streams."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_stream"))
    client.force_login(user)
    return client


# The controls of each permission: the page that shows it, and what marks it there.
BUTTONS = {
    "create": ("list", "Create stream"),
    "fork": ("page", 'value="Fork"'),
    "close": ("page", 'id="ds-close"'),
    "snapshot": ("rooms", 'value="Snapshot"'),
    "delete": ("page", 'id="ds-delete"'),
}
SHOWN_BY = {"add": {"create", "fork"}, "change": {"close", "snapshot"}, "delete": {"delete"}}


def staff_client(django_user_model, *codenames: str):
    from django.test import Client

    user = django_user_model.objects.create_user(name("staff"), password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="durable_streams", codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def shown_buttons(client, path: str) -> set[str]:
    from tests.stateapp.models import ROOMS_STREAM

    pages = {"list": LIST, "page": page_of(path), "rooms": page_of(ROOMS_STREAM)}
    bodies = {}
    for where, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (where, response.status_code)
        bodies[where] = text(response)
    assert "visible" in bodies["page"]
    return {button for button, (where, mark) in BUTTONS.items() if mark in bodies[where]}


@pytest.mark.parametrize("permission", [None, "add", "change", "delete"])
def test_each_permission_shows_exactly_its_own_controls(django_user_model, permission):
    from tests.stateapp.models import Room

    Room.objects.create(name="lobby")  # the rooms stream: a registered model stream
    path = name()
    api.create_stream(path, content_type="text/plain", data="visible")
    codenames = ["view_stream"] + ([f"{permission}_stream"] if permission else [])
    shown = shown_buttons(staff_client(django_user_model, *codenames), path)
    assert shown == SHOWN_BY.get(permission, set())
    # Every control shows for a superuser: each check above can fail.
    assert shown_buttons(admin_client_for(django_user_model), path) == set(BUTTONS)


def admin_client_for(django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_superuser(name("root"), password="pw")
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_view_permission_sees_no_stream(django_user_model):
    path = name()
    api.create_stream(path, content_type="text/plain", data="hidden")
    pk = Stream.objects.get(path=path).pk
    client = staff_client(django_user_model)
    assert client.get(LIST).status_code == 403
    assert client.get(page_of(path)).status_code == 403
    assert client.post(reverse("admin:durable_streams_stream_close", args=[pk])).status_code == 403
    assert not api.head(path).closed


@pytest.mark.parametrize("permission", ["add", "change", "delete"])
def test_each_permission_allows_exactly_its_own_actions(django_user_model, permission):
    from tests.stateapp.models import ROOMS_STREAM, Room

    Room.objects.create(name="lobby")
    client = staff_client(django_user_model, "view_stream", f"{permission}_stream")
    allowed = {
        "add": {"create", "fork"},
        "change": {"close", "snapshot", "snapshot_all"},
        "delete": {"remove"},
    }[permission]
    path = name()
    api.create_stream(path, content_type="text/plain", data="x")
    pk = Stream.objects.get(path=path).pk
    rooms_pk = Stream.objects.get(path=ROOMS_STREAM).pk
    created, forked = name(), name()
    posts = {
        "create": ([], {"path": created, "content_type": "text/plain"}),
        "fork": ([pk], {"path": forked}),
        "snapshot": ([rooms_pk], {}),
        "snapshot_all": ([], {}),
        "close": ([pk], {}),
        "remove": ([pk], {}),  # last: the stream is gone after it
    }
    rooms_before = len(api.read_json(ROOMS_STREAM)[0])
    for action, (args, data) in posts.items():
        url = reverse(f"admin:durable_streams_stream_{action}", args=args)
        response = client.post(url, data)
        assert response.status_code == (302 if action in allowed else 403), action
    # Each allowed action did its work; each refused one changed nothing.
    assert Stream.objects.filter(path=created).exists() == ("create" in allowed)
    assert Stream.objects.filter(path=forked).exists() == ("fork" in allowed)
    snapshots = len(api.read_json(ROOMS_STREAM)[0]) - rooms_before
    assert snapshots == (6 if permission == "change" else 0)  # 2 x start, row, end
    if permission == "delete":
        assert not Stream.objects.filter(path=path, deleted_at__isnull=True).exists()
    else:
        assert api.head(path).closed == (permission == "change")


def test_actions_without_their_permission_are_refused_and_change_nothing(viewer):
    path = name()
    api.create_stream(path, content_type="text/plain", data="x")
    pk = Stream.objects.get(path=path).pk
    before = Stream.objects.count()
    posts = [
        ("create", [], {"path": name(), "content_type": "text/plain"}),
        ("close", [pk], {}),
        ("remove", [pk], {}),
        ("fork", [pk], {"path": name()}),
        ("snapshot", [pk], {}),
        ("snapshot_all", [], {}),
    ]
    for action, args, data in posts:
        response = viewer.post(reverse(f"admin:durable_streams_stream_{action}", args=args), data)
        assert response.status_code == 403, action
    assert Stream.objects.count() == before
    assert not api.head(path).closed


def test_django_s_own_add_change_and_delete_forms_are_off(admin_client):
    path = name()
    api.create_stream(path)
    pk = Stream.objects.get(path=path).pk
    assert admin_client.get(LIST + "add/").status_code == 403
    assert admin_client.get(LIST + f"{pk}/delete/").status_code == 403
    assert admin_client.get("/admin/durable_streams/producerstate/").status_code == 200
    assert admin_client.get("/admin/durable_streams/producerstate/add/").status_code == 403
