"""Notifications' pure parts (issue 20.7)."""

from __future__ import annotations

import pytest

from kran.domain.notify import backoff_s, event_type_of, parse_notify_on, signature, url_allowed, wanted


def test_urls_under_the_prefixes_only() -> None:
    p = ("https://hooks.example.org/kran/", "http://127.0.0.1:8080/in")
    for ok in ("https://hooks.example.org/kran/", "https://hooks.example.org/kran/a/b?x=1", "https://hooks.example.org:443/kran/x",
               "http://127.0.0.1:8080/in", "http://127.0.0.1:8080/in/x"):  # fmt: skip
        assert url_allowed(ok, p), ok
    for bad in (
        "https://hooks.example.org/kranx",  # the path, not a string prefix
        "https://hooks.example.org.evil.net/kran/",
        "http://hooks.example.org/kran/",  # another scheme
        "https://hooks.example.org:8443/kran/",
        "https://u:p@hooks.example.org/kran/",
        "http://127.0.0.1:8080/inx",
        "http://127.0.0.1:8081/in",
        "ftp://hooks.example.org/kran/",
        "https://hooks.example.org:99999/kran/",
        "not a url",
        "https://hooks.example.org/kran/../admin/delete",  # the client goes to /admin/delete (an attack got there)
        "https://hooks.example.org/kran/%2e%2E/admin",
        "https://hooks.example.org/kran/./x",
        "https://hooks.example.org/kran/%2e%2e%2fadmin",  # a receiver decoding %2f (a reviewer's finding)
        "https://hooks.example.org/kran/x/%2e%2e%2f%2e%2e/admin",
        "https://hooks.example.org/kran/..%5cadmin",
        "https://hooks.example.org/kran/..;/admin",
        "https://hooks.example.org/kran/%252e%252e/admin",
    ):
        assert not url_allowed(bad, p), bad
    assert not url_allowed("https://hooks.example.org/kran/", ())


def test_which_events() -> None:
    assert parse_notify_on(None) == ("end",) and parse_notify_on("start, fail,start") == ("start", "fail")
    with pytest.raises(ValueError, match="use start"):
        parse_notify_on("begin")
    states = ("queued", "starting", "running", "succeeded", "killed", "dependency_failed")
    assert [event_type_of(s) for s in states] == [
        None, None, "job.started", "job.succeeded", "job.failed", "job.failed",
    ]  # fmt: skip
    assert wanted(("end",), "job.failed") and not wanted(("end",), "job.started")
    assert wanted(("fail",), "job.failed") and not wanted(("fail",), "job.succeeded")
    assert all(wanted(("all",), t) for t in ("job.started", "job.succeeded", "job.failed", "array.ended"))


def test_signature_and_backoff() -> None:
    # the receiver computes HMAC-SHA256(secret, "TIMESTAMP.BODY")
    assert signature(b"k", "1700000000", b"{}") == (
        "sha256=" + __import__("hmac").new(b"k", b"1700000000.{}", "sha256").hexdigest()
    )
    assert [backoff_s(n) for n in (1, 2, 3, 10, 20)] == [2, 4, 8, 900, 900]
