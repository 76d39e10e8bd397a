vcl 4.1;
# Varnish in front of django-durable-streams: a shared cache that collapses
# live readers (docs/deployment-cache.md). Load it with
# `varnishd -a :8080 -f /path/to/varnish-cache.vcl -s malloc,256m`.
# Values to adapt: the backend address. The backend timeouts must stay above
# the server's LONG_POLL_TIMEOUT (30 s by default) and SSE_MAX_DURATION
# (60 s): a long-poll rightly waits that long for its first byte.

backend origin {
    .host = "127.0.0.1";
    .port = "8000";
    .connect_timeout = 5s;
    .first_byte_timeout = 90s;
    .between_bytes_timeout = 90s;
}

sub vcl_recv {
    if (req.method != "GET") {
        # Writes, OPTIONS, and HEAD: HEAD stays HEAD (a cache miss would make
        # it a GET of a whole catch-up read), and the server answers it no-store.
        return (pass);
    }
    if (req.url ~ "[?&]live=sse(&|$)") {
        # Endless: never cached, never a busy object other readers wait on.
        return (pass);
    }
    if (req.url ~ "[?&]offset=now(&|$)") {
        # "From whenever you ask": always no-store (spec 8). Passed, so no
        # reader waits in line for another's answer it could not use.
        return (pass);
    }
    # Cookie and Authorization do not bypass the cache: the server answers
    # "private" for streams whose reads need credentials, and Varnish does
    # not store those. The key is the whole URL (offset, live, cursor) and
    # the Host; Vary (Origin) is honoured.
    return (hash);
}

sub vcl_hit {
    set req.http.X-Cache-Status = "HIT";
}

sub vcl_miss {
    set req.http.X-Cache-Status = "MISS";
}

sub vcl_pass {
    set req.http.X-Cache-Status = "PASS";
}

sub vcl_backend_response {
    if (bereq.uncacheable) {
        # Passed requests (SSE, writes, HEAD): streamed through as they come.
        return (deliver);
    }
    if (beresp.status == 204 && bereq.url ~ "[?&]live=long-poll(&|$)"
        && beresp.http.Cache-Control == "no-store") {
        # A long-poll timeout: "nothing new yet, ask again with this cursor".
        # Every reader waiting for this key gets the same answer, so keep it
        # for a second and hand it to all of them; otherwise Varnish makes it
        # a hit-for-miss and each waiting reader goes to the server on its own
        # (a herd), or, with a zero TTL, one after another (serialised). A
        # reader that gets it late asks again at once under the next cursor.
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        set beresp.keep = 0s;
        return (deliver);
    }
    # Everything else as the server says: Cache-Control max-age is the TTL,
    # no-store and private are not stored (Varnish's built-in rules make
    # them hit-for-miss, so readers of such a key are never queued).
}

sub vcl_deliver {
    if (!req.http.X-Cache-Status) {
        set req.http.X-Cache-Status = "MISS";
    }
    set resp.http.X-Cache-Status = req.http.X-Cache-Status;
}
