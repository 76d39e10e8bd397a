"""Model change streams: Django models emit State Protocol events, transactionally.

Register a model and its inserts, updates and deletes are appended to a
stream as State Protocol change events, in the same database transaction as
the change itself::

    from durable_streams import state

    @state.register(stream=lambda m: f"rooms/{m.room_id}", type="message")
    class Message(models.Model): ...

See the README section "Model change streams" for the whole picture:
transactions, txids, bulk operations, snapshots and materializing clients.
"""

from .emission import append_events, paused
from .events import InvalidEvent, validate
from .hooks import register, unregister
from .materialize import (
    MaterializedState,
    StreamReadError,
    afollow,
    catch_up,
    catch_up_url,
    follow_url,
    materialize,
)
from .querysets import StreamedQuerySet
from .registration import Registration, StateError, registrations
from .snapshots import SnapshotResult, snapshot, snapshot_all, stream_paths
from .txid import TxidMiddleware, current_txid, new_txid, txid

__all__ = [
    "InvalidEvent",
    "MaterializedState",
    "Registration",
    "SnapshotResult",
    "StateError",
    "StreamReadError",
    "StreamedQuerySet",
    "TxidMiddleware",
    "afollow",
    "append_events",
    "catch_up",
    "catch_up_url",
    "current_txid",
    "follow_url",
    "materialize",
    "new_txid",
    "paused",
    "register",
    "registrations",
    "snapshot",
    "snapshot_all",
    "stream_paths",
    "txid",
    "unregister",
    "validate",
]
