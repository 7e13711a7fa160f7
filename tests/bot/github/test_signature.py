"""GitHub's webhook signature (pure)."""

from __future__ import annotations

import hashlib
import hmac

from bot.github.signature import PREFIX, sign, signature_matches


def test_the_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    digest = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == PREFIX + digest
    assert signature_matches("s3cret", body, PREFIX + digest)
    assert signature_matches("s3cret", body, f"{PREFIX}{digest} \n")  # trailing whitespace


def test_anything_else_does_not_match() -> None:
    body = b"{}"
    good = sign("s3cret", body)
    assert not signature_matches("other", body, good)
    assert not signature_matches("s3cret", body + b" ", good)
    assert not signature_matches("s3cret", body, good.removeprefix(PREFIX))
    assert not signature_matches("s3cret", body, "sha1=" + good.removeprefix(PREFIX))
    assert not signature_matches("s3cret", body, "")
    assert not signature_matches("s3cret", body, PREFIX + "é")
