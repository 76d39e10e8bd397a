"""Subscriptions: durable cursors over streams that wake workers (spec 6 and 7).

A subscription links streams (by glob ``pattern`` and explicit ``streams``)
and keeps one acked offset per link. When a linked stream's tail passes its
acked offset, the subscription has pending work and gets a wake: a webhook
request (:mod:`.webhooks`) or an event appended to a wake stream (pull-wake).
Modules, one concern each:

* :mod:`.errors` the error codes and their statuses;
* :mod:`.globs` the ``*`` / ``**`` pattern rules;
* :mod:`.config` request bodies: validation, normalisation, config hash;
* :mod:`.tokens` the signed callback and claim tokens;
* :mod:`.fencing` generation, wake id and lease rules (spec 7.3), and acks;
* :mod:`.models` the tables; :mod:`.engine` the state changes in Postgres;
* :mod:`.routes` the ``__ds`` HTTP routes; :mod:`.worker` the pull-wake client.
"""
