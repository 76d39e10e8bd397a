"""The published AI transports' clients against Django, through a cuttable link.

node runs ``@durable-streams/aisdk-transport`` and
``@durable-streams/tanstack-ai-transport`` (tests/js_ai/transports.mjs,
installed by ``make ai-clients`` with ``npm ci``) against daphne serving the
example chat endpoints (example_project/ai_views.py) with the local fake model:
a message sent, a generation received, the TCP connections cut mid-generation
(:class:`CutLink` between node and daphne), and the rest received exactly once.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from example_project.fake_model import reply_tokens

pytestmark = pytest.mark.django_db

JS_DIR = Path(__file__).resolve().parent.parent / "js_ai"
NODE_TIMEOUT = 60  # seconds one node run may take at most
TOKENS = 40  # a 2 s generation at the fake model's 20 tokens/s: long enough to cut
FAST = {"EXAMPLE_FAKE_TOKENS": str(TOKENS), "EXAMPLE_FAKE_INTERVAL": "0.05"}


class CutLink:
    """A TCP relay to ``target`` that can cut every open connection at once,
    as a network drop or a mobile app going to the background would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.cut_connections = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            with self.lock:
                self.open = [s for s in self.open if s not in (src, dst)]

    def cut(self) -> int:
        """Reset every open connection (RST, no orderly end); return how many."""
        with self.lock:
            victims, self.open = self.open, []
        for sock in victims:
            try:
                # Linger 0: the close resets the connection. shutdown() wakes
                # the relay thread blocked in recv(), which then closes it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.cut_connections += len(victims) // 2
        return len(victims) // 2

    def close(self) -> None:
        self.closing = True
        self.listener.close()
        self.cut()


@pytest.fixture(scope="module")
def node() -> str:
    if not (JS_DIR / "node_modules" / "@durable-streams" / "aisdk-transport").is_dir():
        pytest.fail("tests/js_ai/node_modules is missing: run `make ai-clients` (npm ci)")
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed; the AI transport tests need Node.js >= 18")
    return path


@pytest.fixture(scope="module")
def ai_server(server_factory):
    server = server_factory(
        DJANGO_SETTINGS_MODULE="tests.ai_settings", DS_TEST_SSE_MAX_DURATION="20", **FAST
    )
    yield server
    server.stop()


@pytest.fixture
def link(ai_server):
    relay = CutLink(ai_server.port)
    yield relay
    relay.close()


def run_node(node: str, scenario: str, base: str, chat: str, *, cut_at=None, link=None, **extra):
    """Run one scenario; cut ``link`` once ``cut_at`` deltas arrived. Returns
    the final JSON line and whether the cut happened mid-generation."""
    argv = [node, "transports.mjs", "--scenario", scenario, "--base", base, "--chat", chat]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(
        argv, cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    cut = 0
    done = None
    try:
        while True:
            line = lines.get(timeout=NODE_TIMEOUT)
            if line is None:
                break
            event = json.loads(line)
            if event["phase"] == "progress" and cut_at and not cut and event["deltas"] >= cut_at:
                cut = link.cut()
            elif event["phase"] in ("done", "error", "timeout"):
                done = event
        proc.wait(timeout=NODE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert done is not None and done["phase"] == "done", (done, stderr)
    return done, cut


def expected_deltas(prompt: str) -> list[str]:
    return reply_tokens(prompt, TOKENS)


def aisdk_chunk_types(chunks: list[dict]) -> list[str]:
    types = [c["type"] for c in chunks]
    collapsed = [
        t for i, t in enumerate(types) if t != "text-delta" or types[i - 1] != "text-delta"
    ]
    return collapsed


def test_aisdk_generation_survives_a_cut_connection_exactly_once(node, link):
    chat = f"c{uuid.uuid4().hex[:12]}"
    done, cut = run_node(node, "aisdk", link.url, chat, cut_at=5, link=link, prompt="hello")
    assert cut >= 1  # the live read was cut mid-generation...
    deltas = [c["delta"] for c in done["chunks"] if c["type"] == "text-delta"]
    # ...and every delta arrived once, in order, to the end: the client's own
    # reconnect went on from its last offset (or, had the read failed, the
    # page's reconnectToStream replayed the generation).
    assert deltas == expected_deltas("hello"), done
    if done["dropped"]:
        first = [c["delta"] for c in done["first"] if c["type"] == "text-delta"]
        assert deltas[: len(first)] == first
    assert aisdk_chunk_types(done["chunks"]) == [
        "start", "start-step", "text-start", "text-delta",
        "text-end", "finish-step", "finish",
    ]  # fmt: skip
    assert done["text"] == "".join(expected_deltas("hello"))  # useChat's processor agrees
    assert done["reconnectAfterEnd"] is None  # finished: the reconnect endpoint says 204


def test_aisdk_await_mode_answers_after_the_generation(node, ai_server):
    chat = f"c{uuid.uuid4().hex[:12]}"
    done, _ = run_node(node, "aisdk-await", ai_server.url, chat, prompt="wait")
    assert done["text"] == "".join(expected_deltas("wait"))


def test_aisdk_page_reload_resumes_the_running_generation(node, ai_server):
    chat = f"c{uuid.uuid4().hex[:12]}"
    done, _ = run_node(node, "aisdk-reload", ai_server.url, chat, stop_after=3, prompt="reload")
    assert done["beforeStart"] is None  # a fresh chat: 204, nothing to resume
    first = [c["delta"] for c in done["first"] if c["type"] == "text-delta"]
    replay = [c["delta"] for c in done["replay"] if c["type"] == "text-delta"]
    assert 3 <= len(first) < TOKENS  # the page left mid-generation
    assert replay == expected_deltas("reload")  # the whole reply, once
    assert done["text"] == "".join(expected_deltas("reload"))
    assert done["reconnectAfterEnd"] is None


def test_aisdk_failing_generation_ends_with_an_error_chunk_and_a_closed_stream(node, ai_server):
    chat = f"c{uuid.uuid4().hex[:12]}"
    done, _ = run_node(node, "aisdk", ai_server.url, chat, prompt="please fail")
    # The reply ends (the stream was closed) with the AI SDK's error chunk,
    # after the deltas written before the failure, and nothing of the error's text.
    assert done["chunks"][-1] == {"type": "error", "errorText": "generation failed"}
    deltas = [c["delta"] for c in done["chunks"] if c["type"] == "text-delta"]
    assert deltas == expected_deltas("please fail")[:3]
    assert done["reconnectAfterEnd"] is None  # nothing runs any more


def test_tanstack_session_survives_a_cut_and_resumes_from_a_snapshot(node, link):
    chat = f"t{uuid.uuid4().hex[:12]}"
    done, cut = run_node(node, "tanstack", link.url, chat, cut_at=5, link=link, prompt="hi")
    assert cut >= 1 and done["drops"] >= 1
    chunks = done["chunks"]
    assert chunks[0] == {"type": "MESSAGES_SNAPSHOT", "messages": []}
    echo = [c for c in chunks if c.get("messageId") == "user-1"]
    assert [c["type"] for c in echo] == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
    assert echo[1]["delta"] == "hi" and echo[0]["role"] == "user"
    reply = [
        c["delta"]
        for c in chunks
        if c["type"] == "TEXT_MESSAGE_CONTENT" and c["messageId"] != "user-1"
    ]
    assert reply == expected_deltas("hi")  # every delta once, across the cut
    assert [c["type"] for c in chunks].count("RUN_STARTED") == 1
    assert chunks[-1]["type"] == "RUN_FINISHED"

    # After a reload: the snapshot holds both messages, and a connection from
    # its offset sees only the second turn.
    snapshot = {m["role"]: m for m in done["snapshot"]}
    assert set(snapshot) == {"user", "assistant"}
    second = done["secondTurn"]
    assert not [c for c in second if c.get("messageId") == "user-1"]
    assert [c for c in second if c.get("messageId") == "user-2"][1]["delta"] == "again"
    again = [
        c["delta"]
        for c in second
        if c["type"] == "TEXT_MESSAGE_CONTENT" and c["messageId"] != "user-2"
    ]
    assert again == expected_deltas("again")
    assert second[-1]["type"] == "RUN_FINISHED"
