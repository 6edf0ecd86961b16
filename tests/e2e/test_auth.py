"""Identities, signed requests, isolation: every route x every role, and the signature rules."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from kran.domain.auth import sign
from tests.conftest import ServerProc

ROLES = ("anonymous", "a", "b", "service", "admin", "disabled")


@pytest.fixture
def world(server: ServerProc) -> dict[str, Any]:
    server.add_user("a")
    server.add_user("b")
    server.add_user("svc", "service")
    server.add_user("dis")
    server.add_user("victim")
    with server.api("a") as c:
        job = c.post("/api/v1/jobs", json={"sh": "echo hi > f.txt; echo out"}).json()["id"]
        c.post("/api/v1/schedules", json={"name": "a-sched", "every": "PT1H", "job": {"command": ["true"]}})
        c.post("/api/v1/apps/a-app", json={"shared": False}).raise_for_status()
    server.wait_state(job, {"succeeded"})
    with server.api() as c:
        c.post("/api/v1/admin/users/dis/disable").raise_for_status()
    return {"job": job}


def client_for(server: ServerProc, role: str) -> httpx.Client:
    if role == "anonymous":
        return httpx.Client(base_url=server.url, timeout=30)
    return server.api(None if role == "admin" else {"service": "svc", "disabled": "dis"}.get(role, role))


OK_ALL = (200, 200, 200, 200, 200, 200)
AUTHED = (401, 200, 200, 200, 200, 401)
OWNER = (401, 200, 404, 404, 200, 401)
ADMIN = (401, 403, 403, 403, 200, 401)


def _name(role: str) -> str:
    return f"n-{role}-{secrets.token_hex(3)}"


# method, path template, body factory (role -> json), expected status per role in ROLES order
TABLE: list[tuple[str, str, Callable[[str], Any] | None, tuple[int, ...]]] = [
    ("GET", "/ping", None, OK_ALL),
    ("GET", "/status", None, OK_ALL),
    ("GET", "/api/v1/status", None, OK_ALL),
    ("GET", "/metrics", None, OK_ALL),
    ("GET", "/api/v1/whoami", None, AUTHED),
    ("POST", "/api/v1/jobs", lambda r: {"command": ["true"]}, (401, 201, 201, 201, 201, 401)),
    ("POST", "/api/v1/jobs/batch", lambda r: {"jobs": [{"command": ["true"]}]}, (401, 201, 201, 201, 201, 401)),
    ("GET", "/api/v1/jobs", None, AUTHED),
    ("GET", "/api/v1/jobs/{job}", None, OWNER),
    ("POST", "/api/v1/jobs/{job}/kill", None, (401, 409, 404, 404, 409, 401)),
    ("GET", "/api/v1/jobs/{job}/logs", None, OWNER),
    ("GET", "/api/v1/jobs/{job}/files", None, OWNER),
    ("GET", "/api/v1/jobs/{job}/files/f.txt", None, OWNER),
    ("GET", "/api/v1/jobs/{job}/archive", None, OWNER),
    # JSON where multipart belongs: past the authentication, refused as bad input
    ("POST", "/api/v1/jobs/upload", lambda r: {"command": ["true"]}, (401, 422, 422, 422, 422, 401)),
    ("POST", "/api/v1/apps/a-app?owner=a", lambda r: {"shared": False}, (401, 201, 404, 404, 201, 401)),
    ("GET", "/api/v1/apps", None, AUTHED),
    ("GET", "/api/v1/apps/a-app?owner=a", None, OWNER),
    ("POST", "/api/v1/apps/a-app/disable?owner=a", None, OWNER),
    ("POST", "/api/v1/apps/a-app/enable?owner=a", None, OWNER),
    ("DELETE", "/api/v1/apps/{app}?owner=a", None, OWNER),
    ("GET", "/api/v1/nodes", None, AUTHED),
    # node changes: admins only; this server runs the local engine, so an admin gets 409
    ("GET", "/api/v1/nodes/join-command", None, (401, 403, 403, 403, 409, 401)),
    ("POST", "/api/v1/nodes/local/labels", lambda r: {"labels": {"a": "b"}}, (401, 403, 403, 403, 409, 401)),
    ("POST", "/api/v1/nodes/local/drain", None, (401, 403, 403, 403, 409, 401)),
    ("POST", "/api/v1/nodes/local/activate", None, (401, 403, 403, 403, 409, 401)),
    ("DELETE", "/api/v1/nodes/local", None, (401, 403, 403, 403, 409, 401)),
    # images: the test image has no registry host, so inspect has nothing to ask (422)
    ("GET", "/api/v1/images/inspect?ref=kran-test/busybox", None, (401, 422, 422, 422, 422, 401)),
    ("GET", "/api/v1/images/status?ref=kran-test/busybox", None, AUTHED),
    ("GET", "/api/v1/images/pins", None, AUTHED),
    ("POST", "/api/v1/images/pins", lambda r: {"ref": "kran-test/busybox"}, (401, 403, 403, 403, 201, 401)),
    ("DELETE", "/api/v1/images/pins?ref=kran-test/busybox", None, ADMIN),
    (
        "POST",
        "/api/v1/images/warm",
        lambda r: {"ref": "kran-test/busybox", "nodes": ["nowhere"]},
        (401, 403, 403, 403, 404, 401),
    ),
    ("POST", "/api/v1/images/gc", lambda r: {"dry_run": True}, ADMIN),
    ("GET", "/api/v1/registries", None, ADMIN),
    # a registry that is not there: past the role check, refused as bad input
    (
        "POST",
        "/api/v1/registries/127.0.0.1:1/login",
        lambda r: {"username": "u", "password": "p"},
        (401, 403, 403, 403, 422, 401),
    ),
    ("DELETE", "/api/v1/registries/127.0.0.1:1", None, ADMIN),
    ("GET", "/api/v1/events", None, AUTHED),
    ("GET", "/api/v1/events/stream", None, AUTHED),
    ("GET", "/api/v1/usage", None, AUTHED),
    (
        "POST",
        "/api/v1/schedules",
        lambda r: {"name": _name(r), "every": "PT1H", "job": {"command": ["true"]}},
        (401, 201, 201, 201, 201, 401),
    ),
    ("GET", "/api/v1/schedules", None, AUTHED),
    ("GET", "/api/v1/schedules/a-sched?owner=a", None, OWNER),
    ("GET", "/api/v1/schedules/a-sched/next?owner=a", None, OWNER),
    ("POST", "/api/v1/schedules/a-sched/disable?owner=a", None, OWNER),
    ("POST", "/api/v1/schedules/a-sched/enable?owner=a", None, OWNER),
    ("POST", "/api/v1/schedules/a-sched/run-now?owner=a", None, (401, 201, 404, 404, 201, 401)),
    ("DELETE", "/api/v1/schedules/{sched}?owner=a", None, OWNER),
    ("GET", "/api/v1/admin/users", None, ADMIN),
    ("POST", "/api/v1/admin/users", lambda r: {"name": _name(r)}, (401, 403, 403, 403, 201, 401)),
    ("POST", "/api/v1/admin/users/victim/disable", None, ADMIN),
    ("POST", "/api/v1/admin/users/victim/enable", None, ADMIN),
    ("GET", "/api/v1/admin/keys", None, ADMIN),
    ("POST", "/api/v1/admin/keys", lambda r: {"user": "b"}, (401, 403, 403, 403, 201, 401)),
    ("POST", "/api/v1/admin/keys/{key}/revoke", None, ADMIN),
]


def test_every_route_has_an_entry(server: ServerProc) -> None:
    import kran.api.admin as admin
    import kran.api.apps as apps
    import kran.api.images as images
    import kran.api.jobs as jobs
    import kran.api.nodes as nodes
    import kran.api.schedules as schedules
    import kran.api.system as system
    import kran.api.usage as usage

    routes = {
        (m, r.path)
        for mod in (admin, apps, images, jobs, nodes, schedules, system, usage)
        for r in mod.router.routes
        if isinstance(r, APIRoute)
        for m in r.methods
    }
    covered = {
        (
            m,
            p.replace("{job}", "{job_id}")
            .replace("{sched}", "{name}")
            .replace("{key}", "{key_id}")
            .replace("a-sched", "{name}")
            .replace("a-app", "{name}")
            .replace("{app}", "{name}")
            .replace("/nodes/local", "/nodes/{node}")
            .replace("/registries/127.0.0.1:1", "/registries/{host}")
            .partition("?")[0]
            .replace("f.txt", "{path:path}")
            .replace("/victim/", "/{name}/"),
        )
        for m, p, _, _ in TABLE
    }
    assert routes - covered == set(), "add the new routes to TABLE"


def test_route_x_role(server: ServerProc, world: dict[str, Any]) -> None:
    failures = []
    for method, template, body, expected in TABLE:
        for role, status in zip(ROLES, expected, strict=True):
            path = template.replace("{job}", str(world["job"]))
            if "{sched}" in path:  # a schedule of a's to delete, fresh each time
                name = _name("del")
                with server.api("a") as c:
                    c.post("/api/v1/schedules", json={"name": name, "every": "PT1H", "job": {"command": ["true"]}})
                path = path.replace("{sched}", name)
            if "{app}" in path:  # an app of a's to unload, fresh each time
                name = _name("app")
                with server.api("a") as c:
                    c.post(f"/api/v1/apps/{name}", json={"shared": False}).raise_for_status()
                path = path.replace("{app}", name)
            if "{key}" in path:
                with server.api() as c:
                    path = path.replace("{key}", c.post("/api/v1/admin/keys", json={"user": "b"}).json()["key_id"])
            with client_for(server, role) as c:
                if path.endswith("/stream"):
                    with c.stream(method, path) as r:
                        got = r.status_code
                else:
                    got = c.request(method, path, json=body(role) if body else None).status_code
            if got != status:
                failures.append(f"{method} {template} as {role}: {got}, expected {status}")
    assert failures == []


def test_isolation_lists_and_usage(server: ServerProc, world: dict[str, Any]) -> None:
    with server.api("b") as c:
        assert c.get("/api/v1/jobs").json()["jobs"] == []
        assert all(s["owner"] == "b" for s in c.get("/api/v1/schedules").json()["schedules"])
        assert c.get("/api/v1/events").json()["events"] == []
        assert c.get("/api/v1/usage", params={"user": "a"}).status_code == 403
    with server.api("a") as c:
        seen = {e["job_id"] for e in c.get("/api/v1/events").json()["events"]}  # before a-sched fires again
        mine = c.get("/api/v1/jobs").json()["jobs"]  # the job and the runs of a-sched
        assert world["job"] in [j["id"] for j in mine] and {j["owner"] for j in mine} == {"a"}
        assert world["job"] in seen and seen <= {j["id"] for j in mine}


def test_service_submits_on_behalf_of_a_user(server: ServerProc, world: dict[str, Any]) -> None:
    with server.api("svc") as c:
        job = c.post("/api/v1/jobs", json={"command": ["true"], "on_behalf_of": "b"}).json()["id"]
        assert c.get(f"/api/v1/jobs/{job}").json()["owner"] == "b"  # the service sees what it submitted
        assert c.post("/api/v1/jobs", json={"command": ["true"], "on_behalf_of": "nobody"}).status_code == 404
    server.wait_state(job, {"succeeded"})
    with server.api("b") as c:
        assert c.get(f"/api/v1/jobs/{job}").status_code == 200
        rows = c.get("/api/v1/usage").json()["rows"]
        assert [r["key"] for r in rows] == ["b"] and rows[0]["jobs"] == {"succeeded": 1}
    with server.api("a") as c:
        assert c.get(f"/api/v1/jobs/{job}").status_code == 404
        r = c.post("/api/v1/jobs", json={"command": ["true"], "on_behalf_of": "b"})
        assert r.status_code == 403 and "only services" in r.json()["error"]


def signed_headers(
    server: ServerProc,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    key_id: str | None = None,
    secret: str | None = None,
    ts: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Signature headers as a client computes them (the admin's key unless given)."""
    creds = server.credentials
    key_id, secret = key_id or creds["key_id"], secret or creds["secret"]
    ts_s, nonce = str(ts if ts is not None else int(time.time())), nonce or secrets.token_hex(16)
    p, _, q = path.partition("?")
    return {
        "X-Kran-Key": key_id,
        "X-Kran-Timestamp": ts_s,
        "X-Kran-Nonce": nonce,
        "X-Kran-Signature": sign(secret, method, p, q, body, ts_s, nonce),
        "content-type": "application/json",
    }


def signed(server: ServerProc, method: str, path: str, body: bytes = b"", **kw: Any) -> httpx.Response:
    headers = signed_headers(server, method, path, body, **kw)
    return httpx.request(method, server.url + path, content=body, headers=headers, timeout=10)


def test_signature_rules(server: ServerProc) -> None:
    body = b'{"command": ["true"]}'
    assert signed(server, "POST", "/api/v1/jobs", body).status_code == 201
    assert signed(server, "GET", "/api/v1/jobs?limit=5&state=queued").status_code == 200
    nonce = secrets.token_hex(16)
    assert signed(server, "GET", "/api/v1/jobs", nonce=nonce).status_code == 200
    cases = {
        "nonce already used": dict(nonce=nonce),
        "unknown or revoked key": dict(key_id="kk_nope"),
        "bad signature": dict(secret="wrong"),
        "timestamp skew over 5 minutes": dict(ts=int(time.time()) - 301),
    }
    for reason, kw in cases.items():
        r = signed(server, "GET", "/api/v1/jobs", **kw)
        assert (r.status_code, r.json()["error"]) == (401, reason)
    # the body is hashed by the server: a changed body breaks the signature
    r = httpx.post(
        server.url + "/api/v1/jobs",
        content=b'{"command": ["false"]}',
        headers=signed_headers(server, "POST", "/api/v1/jobs", body),
        timeout=10,
    )
    assert (r.status_code, r.json()["error"]) == (401, "bad signature")
    # a changed query too
    headers = signed_headers(server, "GET", "/api/v1/jobs", b"")
    r = httpx.get(server.url + "/api/v1/jobs?limit=6", headers=headers, timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "bad signature")
    for r in (
        httpx.get(server.url + "/api/v1/jobs"),
        httpx.get(server.url + "/api/v1/jobs", headers={"Authorization": "Bearer kk_x.y"}),
    ):
        assert r.status_code == 401 and server.credentials["secret"] not in r.text and "KRAN1" not in r.text


def test_disable_and_revoke_take_effect_at_once(kran: Any, server: ServerProc) -> None:
    server.add_user("carol")
    assert kran("jobs", user="carol").exit_code == 0
    assert kran("admin", "user", "disable", "carol").exit_code == 0
    r = kran("jobs", user="carol")
    assert r.exit_code == 1 and "HTTP 401" in r.stderr
    assert kran("admin", "user", "enable", "carol").exit_code == 0
    assert kran("jobs", user="carol").exit_code == 0
    key_id = server.users["carol"][0]
    assert kran("admin", "key", "revoke", key_id).exit_code == 0
    assert kran("jobs", user="carol").exit_code == 1


def test_admin_cli(kran: Any, server: ServerProc) -> None:
    assert kran("admin", "user", "add", "dave", "--role", "service").exit_code == 0
    import json

    users = {u["name"]: u["role"] for u in json.loads(kran("admin", "user", "list", "-o", "json").stdout)}
    assert users == {"admin": "admin", "dave": "service"}
    key = json.loads(kran("admin", "key", "create", "dave", "-o", "json").stdout)
    assert set(key) == {"key_id", "secret"}
    # a secret given to another tool's option parser (`--tes-password SECRET`) must never read as an option
    assert key["secret"].startswith("ks_") and len(key["secret"]) >= 40
    listed = json.loads(kran("admin", "key", "list", "dave", "-o", "json").stdout)
    assert [k["key_id"] for k in listed] == [key["key_id"]] and "secret" not in listed[0]
    assert kran("admin", "user", "add", "dave").exit_code == 1
    server.users["dave"] = (key["key_id"], key["secret"])
    r = kran("admin", "user", "list", user="dave")
    assert r.exit_code == 1 and "admin only" in r.stderr


def test_first_start_writes_a_private_client_config(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    path = Path(server.env["HOME"]) / ".config" / "kran" / "client.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "created user admin" in server.log.read_text()
    server.stop()
    server.start()  # a second start creates nothing
    assert server.log.read_text().count("created user admin") == 1
    os.chmod(path, 0o644)
    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "jobs"],
        env={**server.env, "KRAN_URL": server.url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and "readable by others" in r.stderr
    os.chmod(path, 0o600)
    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "jobs"],
        env={**server.env, "KRAN_URL": server.url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_with_a_private_ca(make_server: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = make_server(KRAN_SERVER_TLS_CERT=str(cert), KRAN_SERVER_TLS_KEY=str(key))
    assert server.url.startswith("https://")
    env = {**server.env, "KRAN_URL": server.url}
    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "jobs"], env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "jobs"],
        env={**env, "KRAN_CA_CERT": str(cert)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "--ca-cert", str(cert), "status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and "ready" in r.stdout, r.stderr


def test_trusted_proxy_header(make_server: Any) -> None:
    server = make_server(KRAN_AUTH_PROXY_USER_HEADER="X-Remote-User", KRAN_AUTH_PROXY_SECRET="s3cret-proxy")
    server.add_user("erin")
    ok = {"X-Remote-User": "erin", "X-Kran-Proxy-Secret": "s3cret-proxy"}
    assert httpx.get(server.url + "/api/v1/whoami", headers=ok).json() == {"user": "erin", "role": "user"}
    for headers in (
        {**ok, "X-Kran-Proxy-Secret": "guess"},
        {"X-Remote-User": "erin"},
        {**ok, "X-Remote-User": "nobody"},
    ):
        assert httpx.get(server.url + "/api/v1/whoami", headers=headers).status_code == 401


def test_plain_http_to_the_tls_port_is_told_to_use_https(make_server: Any, tmp_path: Path) -> None:
    """It was a closed connection: the CLI said only "Server disconnected without sending a response"."""
    cert, key = _self_signed(tmp_path)
    server = make_server(KRAN_SERVER_TLS_CERT=str(cert), KRAN_SERVER_TLS_KEY=str(key))
    plain = f"http://127.0.0.1:{server.port}"
    r = httpx.post(f"{plain}/api/v1/jobs", json={"command": ["true"]}, timeout=10)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    assert f"this port speaks HTTPS; use https://127.0.0.1:{server.port}/" in r.text
    env = {**server.env, "KRAN_URL": plain, "KRAN_CA_CERT": str(cert)}
    r2 = subprocess.run([sys.executable, "-m", "kran.cli.main", "jobs"], env=env, capture_output=True, text=True)
    assert r2.returncode == 1 and "use https://" in r2.stderr, r2.stderr
    # HTTPS on the same port goes on as before, request after request on one connection
    with httpx.Client(base_url=server.url, verify=str(cert), timeout=10) as c:
        assert [c.get("/ping").status_code for _ in range(3)] == [200, 200, 200]
