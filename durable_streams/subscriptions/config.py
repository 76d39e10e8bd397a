"""Subscription request bodies: validation, normalisation and the config hash.

Everything a client sends to the ``__ds`` routes is checked here before any
database work: unknown fields, wrong types, bad globs and bad paths are
``400 INVALID_REQUEST``. Webhook URLs are checked by :mod:`.ssrf`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from . import globs
from .errors import bad_offset, invalid

DEFAULT_LEASE_TTL_MS = 30_000
MIN_LEASE_TTL_MS = 1_000
MAX_LEASE_TTL_MS = 600_000
MAX_PATH_BYTES = 1024
MAX_DESCRIPTION = 4096
MAX_WORKER = 256
MAX_STREAMS = 1000
TYPES = ("webhook", "pull-wake")

_CREATE_FIELDS = {
    "type",
    "pattern",
    "streams",
    "webhook",
    "wake_stream",
    "lease_ttl_ms",
    "description",
}


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body; an empty body is ``{}``."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid("request body is not valid JSON") from None


def parse_object(body: bytes, allowed: set[str]) -> dict:
    """A JSON object body whose keys are all in ``allowed``."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(unknown)}")
    return value


def stream_path(value: object, field: str = "stream") -> str:
    """A normalised stream-root-relative path, or INVALID_REQUEST."""
    if not isinstance(value, str):
        raise invalid(f"{field} must be a string path")
    path = globs.normalize(value)
    if not path:
        raise invalid(f"{field} must not be empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise invalid(f"{field} is longer than {MAX_PATH_BYTES} bytes")
    segments = path.split("/")
    if "\x00" in path or any(seg in (".", "..") for seg in segments):
        raise invalid(f"{field} is not a valid stream path")
    if segments[0] == "__ds":
        raise invalid(f"{field} must not be under the reserved __ds prefix")
    return path


def stream_list(value: object, field: str = "streams") -> list[str]:
    """Normalised, de-duplicated and sorted explicit stream paths."""
    if not isinstance(value, list):
        raise invalid(f"{field} must be an array of stream paths")
    if len(value) > MAX_STREAMS:
        raise invalid(f"{field} has more than {MAX_STREAMS} entries")
    return sorted({stream_path(item, field) for item in value})


@dataclass(frozen=True)
class SubscriptionConfig:
    """A validated, normalised subscription configuration."""

    type: str
    pattern: str | None
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    def config_hash(self) -> str:
        """SHA-256 over the canonical JSON of every configured field (spec 6.2)."""
        canonical = asdict(self)
        canonical["streams"] = list(self.streams)
        raw = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def parse_create(body: bytes) -> SubscriptionConfig:
    """The configuration of a ``PUT __ds/subscriptions/:id`` body.

    The webhook URL is only checked for shape here; the SSRF rules run in
    the route, which knows the deployment.
    """
    data = parse_object(body, _CREATE_FIELDS)
    kind = data.get("type")
    if kind not in TYPES:
        raise invalid('type must be "webhook" or "pull-wake"')
    pattern = data.get("pattern")
    pattern = None if pattern is None else globs.validate(pattern)
    streams = data.get("streams")
    streams = [] if streams is None else stream_list(streams)
    if pattern is None and not streams:
        raise invalid("at least one of pattern or streams is required")
    lease = data.get("lease_ttl_ms", DEFAULT_LEASE_TTL_MS)
    if lease is None:
        lease = DEFAULT_LEASE_TTL_MS
    if (
        not isinstance(lease, int)
        or isinstance(lease, bool)
        or not MIN_LEASE_TTL_MS <= lease <= MAX_LEASE_TTL_MS
    ):
        raise invalid(
            f"lease_ttl_ms must be an integer from {MIN_LEASE_TTL_MS} to {MAX_LEASE_TTL_MS}"
        )
    webhook = data.get("webhook")
    webhook_url = None
    if kind == "webhook":
        if not isinstance(webhook, dict) or set(webhook) - {"url"}:
            raise invalid('webhook subscriptions require "webhook": {"url": ...} and nothing else')
        webhook_url = webhook.get("url")
        if not isinstance(webhook_url, str) or not webhook_url:
            raise invalid("webhook subscriptions require webhook.url")
    elif webhook is not None:
        raise invalid("webhook is only valid for webhook subscriptions")
    wake_stream = data.get("wake_stream")
    if wake_stream is not None:
        wake_stream = stream_path(wake_stream, "wake_stream")
    if kind == "pull-wake" and wake_stream is None:
        raise invalid("pull-wake subscriptions require wake_stream")
    description = data.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise invalid("description must be a string")
        if len(description) > MAX_DESCRIPTION:
            raise invalid(f"description is longer than {MAX_DESCRIPTION} characters")
    return SubscriptionConfig(
        type=kind,
        pattern=pattern,
        streams=tuple(streams),
        webhook_url=webhook_url,
        wake_stream=wake_stream,
        lease_ttl_ms=lease,
        description=description,
    )


def parse_streams(body: bytes) -> list[str]:
    """The paths of a ``POST .../streams`` body: ``{"streams": [...]}``, non-empty."""
    data = parse_object(body, {"streams"})
    streams = stream_list(data.get("streams"))
    if not streams:
        raise invalid("streams must be a non-empty array of stream paths")
    return streams


def parse_claim(body: bytes) -> str:
    """The worker name of a claim body: ``{"worker": "..."}``."""
    data = parse_object(body, {"worker"})
    worker = data.get("worker")
    if not isinstance(worker, str) or not worker.strip():
        raise invalid("worker must be a non-empty string")
    if len(worker) > MAX_WORKER:
        raise invalid(f"worker is longer than {MAX_WORKER} characters")
    return worker


@dataclass(frozen=True)
class Ack:
    stream: str
    offset: str


@dataclass(frozen=True)
class WakeRequest:
    """A callback, ack or release body."""

    wake_id: str | None
    generation: int | None
    acks: tuple[Ack, ...]
    done: bool


def parse_wake_request(body: bytes, *, allow_acks: bool = True) -> WakeRequest:
    """A callback / ack body (``wake_id``, ``generation``, ``acks``, ``done``)
    or, with ``allow_acks`` False, a release body (``wake_id``, ``generation``)."""
    allowed = {"wake_id", "generation"} | ({"acks", "done"} if allow_acks else set())
    data = parse_object(body, allowed)
    wake_id = data.get("wake_id")
    if wake_id is not None and not isinstance(wake_id, str):
        raise invalid("wake_id must be a string")
    generation = data.get("generation")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        raise invalid("generation must be an integer")
    done = data.get("done", False)
    if done is None:
        done = False
    if not isinstance(done, bool):
        raise invalid("done must be a boolean")
    raw_acks = data.get("acks")
    if raw_acks is None:
        raw_acks = []
    if not isinstance(raw_acks, list):
        raise invalid("acks must be an array")
    acks = []
    for item in raw_acks:
        if not isinstance(item, dict) or set(item) - {"stream", "path", "offset"}:
            raise invalid('each ack must be {"stream": ..., "offset": ...}')
        stream = item.get("stream", item.get("path"))
        offset = item.get("offset")
        if not isinstance(offset, str):
            raise bad_offset("ack offset must be an offset string")
        acks.append(Ack(stream_path(stream, "ack stream"), offset))
    return WakeRequest(wake_id, generation, tuple(acks), done)
