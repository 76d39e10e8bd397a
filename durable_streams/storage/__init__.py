"""The data path: every read and write of stream data goes through here.

Each operation is written once, as a generator that yields the queries it
needs and receives their results; two drivers run them (:mod:`.drivers`): on
the caller's Django connection (the sync API joins the caller's transaction)
and on an async psycopg pool on the event loop (the views and the async API).

Modules, one concern each:

* :mod:`.drivers`: the query type, both drivers, the async pool;
* :mod:`.schema`: table names and the stream row's columns;
* :mod:`.types`: the values operations take and return;
* :mod:`.deadline`: when a stream expires (Python, ORM and SQL forms);
* :mod:`.streams`: finding, locking, checking and deleting stream rows;
* :mod:`.forks`: a fork's chain of ancestors and its per-process cache;
* :mod:`.create`: creating streams and forks;
* :mod:`.appends`: appending and closing, in batches;
* :mod:`.groupcommit`: the async append queue that batches appends;
* :mod:`.reads`: reading chunks, shared live reads;
* :mod:`.expiry`: the sweep that reclaims expired streams.

Callers use the names re-exported here (``storage.read(...)``).
"""

from __future__ import annotations

from .appends import aappend_batch, append, append_batch
from .create import acreate_stream, create_stream
from .drivers import Op, Q, aping, close_pool, connection_params
from .expiry import expire
from .reads import aread, peek, read
from .streams import (
    MAX_PATH_BYTES,
    adelete_stream,
    arequire_stream,
    check_path,
    delete_stream,
    get_stream,
    require_stream,
)
from .types import (
    AppendRequest,
    AppendResult,
    BatchOutcome,
    ForkSpec,
    ReadResult,
    StreamMeta,
)

__all__ = [
    "MAX_PATH_BYTES",
    "AppendRequest",
    "AppendResult",
    "BatchOutcome",
    "ForkSpec",
    "Op",
    "Q",
    "ReadResult",
    "StreamMeta",
    "aappend_batch",
    "acreate_stream",
    "adelete_stream",
    "aping",
    "append",
    "append_batch",
    "aread",
    "arequire_stream",
    "check_path",
    "close_pool",
    "connection_params",
    "create_stream",
    "delete_stream",
    "expire",
    "get_stream",
    "peek",
    "read",
    "require_stream",
]
