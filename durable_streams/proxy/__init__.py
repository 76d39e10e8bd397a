"""The Durable Streams proxy protocol (PROXY_PROTOCOL.md).

``POST {proxy-url}`` forwards a request to an allowlisted upstream and, on a
2xx answer, pipes the upstream body into a new durable stream in the
background and answers ``201`` with a pre-signed capability URL; ``GET`` reads
it (offsets, long-poll, SSE as the base protocol), ``PATCH ?action=abort``
stops the upstream, ``HEAD`` and ``DELETE`` need service authentication.
Mount with ``path("v1/proxy/", include("durable_streams.proxy.urls"))``.
"""
