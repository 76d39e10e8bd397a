"""How the admin shows one page of a stream's content: JSON messages (State
Protocol events as table rows), text as is, anything else as a hex dump."""

from __future__ import annotations

import json
from typing import Any

from . import offsets, storage


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _state_row(message: Any) -> dict | None:
    """A State Protocol event as a table row, or None for any other message."""
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return None
    headers = message["headers"]
    if "control" in headers:
        return {"control": True, "type": "", "key": "", "operation": headers["control"]}
    if "operation" not in headers or "type" not in message or "key" not in message:
        return None
    return {
        "control": False,
        "type": message["type"],
        "key": message["key"],
        "operation": headers["operation"],
        "value": _pretty(message["value"]) if "value" in message else "",
        "old_value": _pretty(message["old_value"]) if "old_value" in message else "",
        "txid": headers.get("txid", ""),
    }


def render_content(kind: str, result: storage.ReadResult) -> dict[str, Any]:
    """Template context for one page of content."""
    if kind == "json":
        messages_ = json.loads(result.body)
        rows = []
        for index, message in enumerate(messages_):
            row = _state_row(message) or {"other": True, "value": _pretty(message)}
            row["offset"] = offsets.encode(result.start + index)
            rows.append(row)
        state = any("operation" in row for row in rows)
        return {"json_rows": rows, "state_table": state}
    if kind == "text":
        return {"text": result.body.decode("utf-8", errors="replace")}
    lines = []
    for start in range(0, len(result.body), 16):
        chunk = result.body[start : start + 16]
        lines.append(
            {
                "position": f"{result.start + start:08x}",
                "hex": " ".join(f"{b:02x}" for b in chunk),
                "ascii": "".join(chr(b) if 32 <= b < 127 else "." for b in chunk),
            }
        )
    return {"hex_lines": lines}
