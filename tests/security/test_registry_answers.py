"""A job names its image, and so the registry the server asks for the image's size: any
host. A hostile registry's answers (an endless manifest, a token service elsewhere on
plain http, answers that are not JSON) are refused with a reason; they filled the server's
memory (3 GiB manifest: 6.1 GB RSS), made it fetch internal URLs and pass on what came
back, and ended in a 500 (an outside attack's high finding)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from kran.adapters.registry import IN_FLIGHT, MAX_BODY, RegistryClient
from kran.domain.images import parse_ref
from kran.errors import RegistryError

HITS: list[str] = []


class Hostile(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        HITS.append(self.path)
        repo = self.path.split("/")[2] if self.path.startswith("/v2/") else ""
        port = self.server.server_address[1]
        if self.path.startswith("/internal"):
            self._send(200, b'{"token": "INTERNAL-SECRET"}')
        elif repo == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                for _ in range(64):  # 64 MiB, far past the cap
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client stopped reading
        elif repo == "elsewhere" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://localhost:{port}/internal",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif repo == "garbage-token-local" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://localhost:{port}/notjson",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif repo == "garbage-token" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/notjson",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif repo == "https-inside" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="https://localhost:{port}/internal",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif repo == "nested":
            self._send(200, b"[" * 100_000 + b"]" * 100_000)
        elif repo == "slow":
            time.sleep(3)
            self._send(200, b"{}")
        elif repo == "stall":
            time.sleep(6)
            self._send(200, b'{"schemaVersion": 2, "config": {"size": 10}, "layers": []}')
        elif repo == "drip" or self.path.startswith("/dripauth"):
            self._drip(port)
        elif repo == "badrealm" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="http://[::1/t",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif repo == "infsize":
            self._send(200, b'{"schemaVersion": 2, "config": {"size": 1e999}, "layers": []}')
        elif repo == "ctrldigest":
            entry = b'{"digest": "sha256:\\u0001", "platform": {"os": "linux", "architecture": "amd64"}}'
            self._send(200, b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [' + entry + b"]}")
        elif repo == "eurotoken" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/euro",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/euro"):
            self._send(200, '{"token": "\u20ac"}'.encode())
        elif repo in ("badindex", "nodigest"):
            entry = b'"x"' if repo == "badindex" else b'{"platform": {"os": "linux", "architecture": "amd64"}}'
            self._send(200, b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [' + entry + b"]}")
        elif self.path.startswith("/notjson"):
            self._send(200, b"<html>not json</html>")
        elif repo == "fine":
            layers = b'[{"digest": "sha256:a", "size": 90}]'
            self._send(200, b'{"schemaVersion": 2, "config": {"size": 10}, "layers": ' + layers + b"}")
        elif repo == "list":
            self._send(200, b'["not", "a", "manifest"]')
        else:
            self._send(200, b'{"schemaVersion": 2, "layers": [{"digest": 1}]}')

    def _drip(self, port: int) -> None:
        """Each answer 1.5 s late: a challenge, a token, then a manifest a byte a second."""
        time.sleep(1.5)
        if self.path.startswith("/dripauth"):
            self._send(200, b'{"token": "t"}')
        elif "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/dripauth",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(20):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    HITS.clear()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_hostile_registrys_answers_are_refused_with_a_reason(hostile: str) -> None:
    client = RegistryClient(timeout_s=10)
    reasons = {}
    repos = ("huge", "elsewhere", "garbage-token", "list", "malformed", "nested", "https-inside", "badrealm")
    for repo in (*repos, "badindex", "nodigest", "infsize", "ctrldigest", "eurotoken"):
        with pytest.raises(RegistryError) as e:
            client.resolve(parse_ref(f"{hostile}/{repo}:1"))
        assert e.value.answered
        reasons[repo] = str(e.value)
    assert f"over {MAX_BODY >> 20} MiB" in reasons["huge"]
    assert "neither https nor on its own host" in reasons["elsewhere"]
    assert not any(p.startswith("/internal") for p in HITS), "the server fetched the realm elsewhere"
    assert "not a token" in reasons["garbage-token"]
    assert "malformed manifest" in reasons["list"] and "malformed manifest" in reasons["malformed"]
    assert "not JSON" in reasons["nested"]  # (json.loads: RecursionError, a 500, before)
    assert "non-public address" in reasons["https-inside"]
    # (before: ValueError, AttributeError and KeyError, each a 500)
    assert "token service by a malformed URL" in reasons["badrealm"]
    assert "malformed index" in reasons["badindex"] and "without a digest" in reasons["nodigest"]
    # (before: OverflowError, httpx.InvalidURL, UnicodeEncodeError: 500s, each looked up again on a request thread)
    assert all("cannot use" in reasons[r] for r in ("infsize", "ctrldigest", "eurotoken")), reasons


def test_a_lookup_takes_the_registry_timeout_in_all(hostile: str) -> None:
    """The timeout is for the whole lookup (challenge, token, manifests), not for each of its
    requests (before: each got it anew, and a registry answering each a little late held a
    thread for several timeouts; one sending a byte now and then, for twice each)."""
    began = time.monotonic()
    with pytest.raises(RegistryError) as e:
        RegistryClient(timeout_s=2).resolve(parse_ref(f"{hostile}/drip:1"))
    took = time.monotonic() - began
    assert not e.value.answered and took < 4, (took, str(e.value))


def test_lookups_at_once_are_capped(hostile: str) -> None:
    """A slow registry holds the thread of each submit that names it: at most IN_FLIGHT at
    once; past that the size stays unknown (the job is not refused)."""
    client = RegistryClient(timeout_s=10)
    errors: list[RegistryError] = []

    def look() -> None:
        try:
            client.resolve(parse_ref(f"{hostile}/slow:1"))
        except RegistryError as e:
            errors.append(e)

    threads = [threading.Thread(target=look) for _ in range(IN_FLIGHT + 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    skipped = [e for e in errors if "lookups under way" in str(e)]
    assert len(skipped) == 4 and not any(e.answered for e in skipped), errors


def test_one_user_cannot_hold_every_lookup(hostile: str, open_server: Any) -> None:
    """One user naming slow registries holds at most LOOKUPS_PER_USER of the lookups: another
    user's image still gets its size meanwhile (before: the first user's IN_FLIGHT lookups
    left everyone's images without a size, and so without a size class)."""
    from kran.services.image_lookups import LOOKUPS_PER_USER

    server = open_server()
    server.add_user("greedy")
    server.add_user("other")
    answers: list[httpx.Response] = []

    def look(i: int) -> None:
        with server.api("greedy") as c:
            answers.append(c.get("/api/v1/images/inspect", params={"ref": f"{hostile}/slow:{i}"}))

    threads = [threading.Thread(target=look, args=(i,)) for i in range(IN_FLIGHT + 2)]
    for t in threads:
        t.start()
    time.sleep(1)  # (the slow registry answers after 3 s)
    with server.api("other") as c:
        r = c.get("/api/v1/images/inspect", params={"ref": f"{hostile}/fine:1"})
    for t in threads:
        t.join(30)
    assert r.status_code == 200 and r.json()["size"] == 100, r.text
    refused = [a for a in answers if "lookups of yours under way" in a.text]
    assert len(refused) == IN_FLIGHT + 2 - LOOKUPS_PER_USER, [a.text for a in answers]
    assert all(a.status_code == 422 for a in refused)


def test_submits_of_one_image_at_once_share_one_lookup(hostile: str, open_server: Any) -> None:
    """The per-user cap must not leave a user's many submits of one image at once without
    a size (a workflow engine submits in parallel): they share one lookup and its answer."""
    server = open_server()
    server.add_user("busy")
    answers: list[httpx.Response] = []

    def look() -> None:
        with server.api("busy") as c:
            answers.append(c.get("/api/v1/images/inspect", params={"ref": f"{hostile}/slow:shared"}))

    threads = [threading.Thread(target=look) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert HITS.count("/v2/slow/manifests/shared") == 1, HITS


def _while_busy(server: Any, path: str, body: Any, n: int, after_s: float) -> tuple[list[httpx.Response], float]:
    """`n` parallel POSTs of `body` to `path` by the user "busy"; `after_s` into them, how
    long another user's listing of jobs (a request thread's work) took."""
    server.add_user("busy")
    server.add_user("other")
    answers: list[httpx.Response] = []

    def submit() -> None:
        with server.api("busy") as c:
            answers.append(c.post(path, json=body, timeout=60))

    threads = [threading.Thread(target=submit) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(after_s)
    with server.api("other") as c:
        began = time.monotonic()
        assert c.get("/api/v1/jobs").status_code == 200
        took = time.monotonic() - began
    for t in threads:
        t.join(60)
    return answers, took


def test_submits_waiting_on_a_lookup_hold_no_request_thread(hostile: str, open_server: Any) -> None:
    """Submits of an image whose lookup is under way wait for its answer holding no thread
    of the server's pool (before: each held one, and one user's 60 parallel submits of a
    slow registry's image left every other request waiting as long as the registry)."""
    server = open_server()
    job = {"image": f"{hostile}/stall:1", "command": ["true"]}
    answers, took = _while_busy(server, "/api/v1/jobs", job, 60, 1.5)  # (the registry answers after 6 s)
    assert took < 3, took
    assert [a.status_code for a in answers] == [201] * 60, {a.text for a in answers}
    assert HITS.count("/v2/stall/manifests/1") == 1, HITS
    with server.api("busy") as c:
        sizes = {c.get(f"/api/v1/jobs/{a.json()['id']}").json()["image_size"] for a in answers}
    assert sizes == {10}, sizes


def test_a_batchs_images_past_the_users_cap_are_looked_up_holding_no_thread(hostile: str, open_server: Any) -> None:
    """A batch naming more images than the user's LOOKUPS_PER_USER: the third is looked up
    once one of the first two ends, still holding no thread (before: its lookup ran on the
    request thread after the others, and 45 such batches at once held the whole pool)."""
    server = open_server()
    batch = {"jobs": [{"image": f"{hostile}/stall:{t}", "command": ["true"]} for t in "abc"]}
    answers, took = _while_busy(server, "/api/v1/jobs/batch", batch, 45, 8)  # c's lookup under way, 6 s to 12 s
    assert took < 3, took
    assert [a.status_code for a in answers] == [201] * 45, {a.text for a in answers}
    assert [HITS.count(f"/v2/stall/manifests/{t}") for t in "abc"] == [1, 1, 1], HITS
    with server.api("busy") as c:
        sizes = {c.get(f"/api/v1/jobs/{i}").json()["image_size"] for a in answers for i in a.json()["ids"]}
    assert sizes == {10}, sizes


def test_a_job_naming_a_hostile_registry_gets_a_4xx(hostile: str, open_server: Any) -> None:
    server = open_server()
    with server.api() as c:
        for repo in ("huge", "garbage-token"):
            r = c.post("/api/v1/jobs", json={"image": f"{hostile}/{repo}:1", "command": ["true"]})
            assert r.status_code == 422 and "image" in r.text, r.text


def _counting_listeners() -> tuple[dict[str, Any], dict[str, int]]:
    """A listener on 127.0.0.1 ("internal") and one on 127.0.0.2 ("public"), one port, each
    counting the connections it takes (and hanging up)."""
    import socket

    hits = {"127.0.0.1": 0, "127.0.0.2": 0}
    listeners: dict[str, Any] = {}
    for address in hits:
        s = socket.socket()
        s.bind((address, 0 if not listeners else next(iter(listeners.values())).getsockname()[1]))
        s.listen(8)
        listeners[address] = s

    def accept(address: str, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            hits[address] += 1
            conn.close()

    for address, s in listeners.items():
        threading.Thread(target=accept, args=(address, s), daemon=True).start()
    return listeners, hits


def _challenging(realm: str, address: str) -> ThreadingHTTPServer:
    """A registry on `address` that answers every request with a bearer challenge naming `realm`."""

    class Challenging(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer((address, 0), Challenging)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _rebind(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`name` resolves to 127.0.0.2 ("public") the first time, to 127.0.0.1 ("internal") after."""
    import socket

    answers = iter(["127.0.0.2"])
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "127.0.0.1"), port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)


def _close(httpd: ThreadingHTTPServer, listeners: dict[str, Any]) -> None:
    httpd.shutdown()
    httpd.server_close()
    for s in listeners.values():
        s.close()


def test_the_token_service_is_asked_at_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the realm's name resolves to a "public" address for the check, then to
    an internal one. The token request goes to the address checked, never resolving again
    (before: httpx resolved the name anew at the connect and reached the internal one).
    Here 127.0.0.2 stands for a public address and 127.0.0.1 for an internal one."""
    import kran.adapters.registry as registry

    listeners, hits = _counting_listeners()
    port = listeners["127.0.0.1"].getsockname()[1]
    _rebind(monkeypatch, "tokens.test")
    monkeypatch.setattr(
        registry, "address_refused", lambda host, address, patterns: "internal" if address == "127.0.0.1" else None
    )

    httpd = _challenging(f"https://tokens.test:{port}/token", "127.0.0.1")
    try:
        with pytest.raises(RegistryError):  # (the "public" one speaks no TLS)
            RegistryClient(timeout_s=5).resolve(parse_ref(f"127.0.0.1:{httpd.server_address[1]}/x:1"))
        assert hits == {"127.0.0.1": 0, "127.0.0.2": 1}, hits
    finally:
        _close(httpd, listeners)


def test_a_token_service_on_the_registrys_host_is_asked_where_the_registry_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding on the registry's own name: a realm on the registry's host (any port,
    plain http) is asked at the address the challenge came from, never resolving the name
    again (before: the name resolved anew at the connect, to an internal address). Here
    127.0.0.2 stands for the registry's public address and 127.0.0.1 for an internal one."""
    listeners, hits = _counting_listeners()
    token_port = listeners["127.0.0.1"].getsockname()[1]
    httpd = _challenging(f"http://reg.test:{token_port}/token", "127.0.0.2")
    _rebind(monkeypatch, "reg.test")
    registry = f"reg.test:{httpd.server_address[1]}"
    try:
        with pytest.raises(RegistryError):  # (the token service hangs up)
            RegistryClient(insecure=frozenset({registry}), timeout_s=5).resolve(parse_ref(f"{registry}/x:1"))
        assert hits == {"127.0.0.1": 0, "127.0.0.2": 1}, hits
    finally:
        _close(httpd, listeners)


def test_a_same_host_token_service_is_not_asked_when_the_registrys_address_is_unknown(
    hostile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that hangs up right after its challenge leaves no address to pin its
    token service to (its name, resolved again, could point inside): refused, not asked
    (before: asked by name)."""
    import kran.adapters.registry as registry

    monkeypatch.setattr(registry, "_peer", lambda r: None)
    port = hostile.rsplit(":", 1)[1]
    with pytest.raises(RegistryError, match="hung up before its address was known"):
        RegistryClient(timeout_s=5).resolve(parse_ref(f"localhost:{port}/garbage-token-local:1"))
    assert not any(p.startswith("/notjson") for p in HITS), HITS
