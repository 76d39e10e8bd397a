"""Webhook signatures (spec 7.1, 6.5): verified by a standard JOSE library from the JWK."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from cryptography.exceptions import InvalidSignature
from jwcrypto import jwk

from durable_streams.subscriptions import signing

SEED = bytes(range(32))
HEADER = re.compile(r"^t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)$")


def jose_public_key(public: dict):
    """The verification key as jwcrypto loads it from the published JWK."""
    return jwk.JWK(**public).get_op_key("verify")


def test_header_has_the_specified_shape():
    key = signing.SigningKey.from_seed(SEED)
    header = key.sign(b'{"a":1}', timestamp=1778324210)
    t, kid, sig = HEADER.match(header).groups()
    assert t == "1778324210"
    assert kid == key.kid
    assert "=" not in sig and len(base64.urlsafe_b64decode(sig + "==")) == 64


def test_signature_over_timestamp_dot_raw_body_verifies_with_jose_library():
    key = signing.SigningKey.from_seed(SEED)
    body = '{"subscription_id":"sub-1","text":"héllo"}'.encode()
    t, kid, sig = HEADER.match(key.sign(body, timestamp=1778324210)).groups()
    public = signing.public_jwk(signing.public_x(key.private_key.public_key()))
    assert public["kid"] == kid
    verifier = jose_public_key(public)
    verifier.verify(signing.b64url_decode(sig), f"{t}.".encode() + body)
    with pytest.raises(InvalidSignature):
        verifier.verify(signing.b64url_decode(sig), f"{int(t) + 1}.".encode() + body)
    with pytest.raises(InvalidSignature):
        verifier.verify(signing.b64url_decode(sig), f"{t}.".encode() + body + b" ")


def test_kid_is_ds_prefixed_rfc7638_thumbprint():
    key = signing.SigningKey.from_seed(SEED)
    public = signing.public_jwk(signing.public_x(key.private_key.public_key()))
    # jwcrypto computes the RFC 7638 thumbprint on its own.
    assert public["kid"] == "ds_" + jwk.JWK(**public).thumbprint(hashes_sha256())
    assert public | {} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": public["x"],
        "kid": public["kid"],
        "use": "sig",
        "alg": "EdDSA",
    }


def hashes_sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def test_thumbprint_matches_rfc8037_example():
    # RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    expected = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert signing.thumbprint_kid(x) == "ds_" + expected
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).digest() == signing.b64url_decode(expected)


def test_distinct_keys_have_distinct_kids():
    a = signing.SigningKey.from_seed(bytes(32))
    b = signing.SigningKey.from_seed(bytes(31) + b"\x01")
    assert a.kid != b.kid
