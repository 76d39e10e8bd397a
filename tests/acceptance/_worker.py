"""A separate OS process appending through the in-process API (``durable_streams.api``).

Run as ``python -m tests.acceptance._worker COMMAND ...`` with
``DJANGO_SETTINGS_MODULE=tests.settings`` and ``DATABASE_URL`` pointing at the
test database. It prints ``ready`` once Django is set up, then waits for a line
on stdin before it writes, so the caller controls exactly when appends start.

Commands:

``append-many PATH TAG COUNT``
    On the go line, append COUNT text records ``<TAG:i:...>``; print one JSON
    line ``{"end": next_position, "data": record}`` per acknowledged append.
``append-line PATH``
    Append the go line itself (without its newline) and print the JSON ack.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from durable_streams import api

    command, path = argv[0], argv[1]
    print("ready", flush=True)
    go = sys.stdin.readline()
    if not go:
        return 1
    if command == "append-many":
        tag, count = argv[2], int(argv[3])
        for i in range(count):
            record = f"<{tag}:{i}:{'x' * (i % 7)}>"
            result = api.append(path, record, content_type="text/plain")
            print(json.dumps({"end": result.next_position, "data": record}), flush=True)
    elif command == "append-line":
        record = go.rstrip("\n")
        result = api.append(path, record, content_type="text/plain")
        print(json.dumps({"end": result.next_position, "data": record}), flush=True)
    else:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
