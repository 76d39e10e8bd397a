"""The proxy's error responses (PROXY_PROTOCOL.md section 11)."""

from __future__ import annotations

import json

from django.http import HttpResponse


class ProxyError(Exception):
    """An error the proxy answers with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> HttpResponse:
        body = json.dumps({"error": {"code": self.code, "message": self.message}})
        response = HttpResponse(body, status=self.status, content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response
