"""Registry credentials: stored encrypted, checked against the registry before they are
kept, used for lookups and pulls, never logged or returned."""

from __future__ import annotations

import re
from typing import Any

from kran.errors import InvalidInput, RegistryError
from kran.services.runtime import Runtime

HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?")


def login(rt: Runtime, host: str, username: str, password: str) -> None:
    if not HOST.fullmatch(host):
        raise InvalidInput(f"{host!r} is not a registry host[:port]", "host")
    try:
        rt.registry.check_login(host, (username, password))
    except RegistryError as e:
        raise InvalidInput(str(e), "password") from None
    rt.image_store.set_credentials(host, username, password, rt.clock.now())
    rt.image_state.info.clear()  # answers given without these credentials


def logout(rt: Runtime, host: str) -> bool:
    return bool(rt.image_store and rt.image_store.delete_credentials(host))


def list_logins(rt: Runtime) -> list[dict[str, Any]]:
    return rt.image_store.registries() if rt.image_store else []
