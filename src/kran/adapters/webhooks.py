"""POSTs of notifications (services.notify): one shared HTTP client, a short timeout, no
redirects followed (a redirect could lead outside the prefixes the admin allowed)."""

from __future__ import annotations

import httpx

TIMEOUT_S = 5.0
_client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)


def post_json(url: str, body: bytes, headers: dict[str, str]) -> int:
    """The answer's status; httpx.HTTPError when there was none."""
    return _client.post(url, content=body, headers=headers).status_code
