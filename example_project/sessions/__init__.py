"""Durable Sessions: a multi-user, multi-agent chat on one durable stream.

Every session is one stream, ``sessions/<uuid>``, of State Protocol events
(see :mod:`.schema`): message chunks keyed ``messageId:seq``, presence keyed
``actorId:deviceId`` and agents keyed ``agentId``. Browsers materialize it with
the official ``@durable-streams/state`` StreamDB; agents are woken by a
pull-wake subscription and stream their replies with the token writer. See
docs/sessions.md.
"""
