"""AI streaming: resumable generations over durable streams.

- :func:`awrite_stream`, :func:`write_stream` and :class:`TokenWriter` write a
  model's chunks into a stream, coalesced and exactly once (:mod:`.writer`);
- :mod:`.encoding` says how chunks become stream bytes;
- :mod:`.aisdk` and :mod:`.tanstack` are the server halves of the official
  ``@durable-streams/aisdk-transport`` and ``@durable-streams/tanstack-ai-transport``
  clients, as Django view helpers.

See docs/ai-streaming.md.
"""

from .encoding import Encoding, JSONMessages, Text
from .writer import TokenWriter, WriteResult, awrite_stream, write_stream

__all__ = [
    "Encoding",
    "JSONMessages",
    "Text",
    "TokenWriter",
    "WriteResult",
    "awrite_stream",
    "write_stream",
]
