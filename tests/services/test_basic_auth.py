"""HTTP basic credentials (what TES clients offer when they have no token): the key id and
secret, taken only over TLS or from this machine; a wrong one is refused like a token."""

from __future__ import annotations

import base64

import pytest

from kran.domain.auth import Principal, Role
from kran.errors import Unauthorized
from kran.services.auth import Authenticator


class OneKey:
    def credentials(self, key_id: str) -> tuple[Principal, str] | None:
        return (Principal("alice", Role.USER), "s3cret") if key_id == "k1" else None


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _auth(headers: dict[str, str], private: bool) -> Principal:
    auth = Authenticator(OneKey(), started_at=0.0)  # type: ignore[arg-type,unused-ignore]
    auth.precheck(headers, private)
    return auth.authenticate(headers, "GET", "/ga4gh/tes/v1/tasks", "", "", private)


def test_basic_with_a_key_id_and_secret_over_a_private_channel() -> None:
    assert _auth(_basic("k1", "s3cret"), private=True) == Principal("alice", Role.USER)


@pytest.mark.parametrize(
    "headers",
    [
        _basic("k1", "wrong"),
        _basic("k2", "s3cret"),
        _basic("k1", ""),
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
    ],
)
def test_bad_basic_credentials_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        _auth(headers, private=True)


def test_basic_is_refused_in_the_clear_from_elsewhere() -> None:
    with pytest.raises(Unauthorized, match="only over TLS"):
        _auth(_basic("k1", "s3cret"), private=False)
