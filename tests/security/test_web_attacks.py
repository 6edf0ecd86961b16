"""Attacks on the web dashboard (issue 22), found by an outside review; each failed before
its fix."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProc
from tests.web.webclient import PRE, WebClient


def _listener() -> tuple[socket.socket, list[bytes]]:
    """A TCP server on the host's loopback that records what it is sent."""
    got: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                got.append(conn.recv(100) or b"connected")

    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def test_a_host_job_without_network_reaches_no_socket_of_the_host(server: ServerProc) -> None:
    """A host job listening on the host's loopback got the dashboard's cookie from a browser
    sent to its port; one connecting there reaches other users' jobs and the server. Without
    --network it has only a loopback of its own (as a container); with it, the host's."""
    srv, got = _listener()
    port = srv.getsockname()[1]
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo hi >&3 && echo reached"
    try:
        with server.api() as api:
            closed = api.post("/api/v1/jobs", json={"command": ["bash", "-c", probe]}).json()["id"]
            inner = api.post(
                "/api/v1/jobs",
                json={"command": ["bash", "-c", "ip -o link show; exec 3<>/dev/tcp/127.0.0.1/1 || echo refused"]},
            ).json()["id"]
            opened = api.post("/api/v1/jobs", json={"command": ["bash", "-c", probe], "network": True}).json()["id"]
            for job in (closed, inner, opened):
                server.wait_state(job, {"succeeded", "failed"})
            assert "reached" not in api.get(f"/api/v1/jobs/{closed}/logs").text
            own = api.get(f"/api/v1/jobs/{inner}/logs").text
            links = [line for line in own.splitlines() if ": <" in line]
            assert "refused" in own and len(links) == 1 and ": lo: <LOOPBACK,UP" in links[0]  # its own, up
            assert "reached" in api.get(f"/api/v1/jobs/{opened}/logs").text
        assert got == [b"hi\n"]  # only the job that asked for the network
    finally:
        srv.close()


@pytest.mark.timeout(120)
def test_followed_logs_take_none_of_the_servers_request_threads(server: ServerProc) -> None:
    """45 follows of a quiet job (opened and closed again) held every request thread until
    the job ended: nobody's request was answered."""
    server.add_user("alice")
    server.add_user("bob")
    with server.api("alice") as api:
        job = api.post("/api/v1/jobs", json={"command": ["sleep", "60"]}).json()["id"]
    server.wait_state(job, {"running"})
    key_id, secret = server.users["alice"]
    clients = []
    refused = 0
    for _ in range(45):
        c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_id}.{secret}"}, timeout=5)
        r = c.send(c.build_request("GET", f"/api/v1/jobs/{job}/logs", params={"follow": "true"}), stream=True)
        refused += r.status_code == 429
        clients.append((c, r))
    assert refused == 45 - 8  # at most 8 follows per user
    for c, r in clients:
        r.close()
        c.close()
    with server.api("bob") as bob:
        t = time.monotonic()
        assert bob.get("/api/v1/jobs", timeout=10).status_code == 200
        assert time.monotonic() - t < 3


def test_a_live_stream_from_the_start_shows_no_one_elses_jobs(server: ServerProc) -> None:
    """`after` replays stored events into a dashboard stream: only the viewer's, also when
    asked for another user's job by id."""
    server.add_user("erin")
    server.add_user("fay")
    with server.api("erin") as erin, server.api("fay") as fay:
        hers = erin.post("/api/v1/jobs", json={"command": ["true"], "name": "erins"}).json()["id"]
        mine = fay.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
    server.wait_state(hers, {"succeeded"})
    server.wait_state(mine, {"succeeded"})
    with WebClient(server, "fay") as web:
        for url in ("/ui/events?after=0", f"/ui/events?after=0&job={hers}"):
            text = ""
            with web.http.stream("GET", url, headers={"Last-Event-ID": "0"}, timeout=3) as stream:
                try:
                    for chunk in stream.iter_text():
                        text += chunk
                except httpx.ReadTimeout:
                    pass
            assert f'"job_id": {hers},' not in text and "erins" not in text
            if "job=" not in url:
                assert f'"job_id": {mine},' in text  # the replay works: the viewer's own are there
        # a reconnect's Last-Event-ID is a client's value: what is not a plain id is ignored (was a 500)
        for bad in (b"\xb2", b"\xb9", "\u0661".encode(), b"1" * 5000, b"-1", b"x", b"99999999999999999999"):
            with web.http.stream("GET", "/ui/events", headers={"Last-Event-ID": bad}, timeout=3) as stream:
                assert stream.status_code == 200, bad


def test_live_streams_end_with_the_session(server: ServerProc) -> None:
    """An open /ui/events went on after sign-out, a revoked key and a disabled user."""
    key_id, _ = server.add_user("carol", "admin")
    with WebClient(server, "carol") as web:
        with web.http.stream("GET", "/ui/events", timeout=20) as stream:
            with server.api() as admin:
                admin.post(f"/api/v1/admin/keys/{key_id}/revoke").raise_for_status()
            t = time.monotonic()
            text = "".join(stream.iter_text())  # ends by itself
    assert "signed-out" in text and time.monotonic() - t < 12


def test_disabling_a_user_ends_their_sessions_for_good(server: ServerProc) -> None:
    """Sessions came back when a disabled user was enabled again, and a session opened with a
    link outlived the key that made the link."""
    key_id, _ = server.add_user("dan")
    with WebClient(server, "dan") as web, httpx.Client(base_url=server.url) as browser:
        with server.api("dan") as api:
            link = api.post("/api/v1/web/links", json={}).json()["url"].removeprefix(server.url)
        pre = PRE.search(browser.get(link).text)
        assert pre and browser.post(link, data={"pre": pre[1]}).status_code == 303
        assert browser.get("/ui/jobs").status_code == 200
        with server.api() as admin:
            admin.post("/api/v1/admin/users/dan/disable").raise_for_status()
            admin.post("/api/v1/admin/users/dan/enable").raise_for_status()
        assert web.get("/ui/jobs").status_code == 303
        assert browser.get("/ui/jobs").status_code == 303
    # a new link, then its key revoked: the link's session ends too
    with WebClient(server, "dan") as web, httpx.Client(base_url=server.url) as other:
        with server.api("dan") as api:
            link = api.post("/api/v1/web/links", json={}).json()["url"].removeprefix(server.url)
        pre = PRE.search(other.get(link).text)
        assert pre and other.post(link, data={"pre": pre[1]}).status_code == 303
        with server.api() as admin:
            admin.post(f"/api/v1/admin/keys/{key_id}/revoke").raise_for_status()
        assert other.get("/ui/jobs").status_code == 303
        assert web.get("/ui/jobs").status_code == 303


def test_a_link_for_a_disabled_user_signs_no_one_in_and_says_whom_it_is_for(server: ServerProc) -> None:
    server.add_user("erin")
    with server.api() as admin:
        link = admin.post("/api/v1/web/links", json={"user": "erin"}).json()["url"].removeprefix(server.url)
        page = httpx.get(server.url + link)
        assert 'id="link-user">erin<' in page.text  # whom it signs in, before it is used
        admin.post("/api/v1/admin/users/erin/disable").raise_for_status()
        admin.post("/api/v1/admin/users/erin/enable").raise_for_status()
    with httpx.Client(base_url=server.url) as browser:
        form = browser.get(link)
        assert form.status_code == 401 and "link-user" not in form.text
        pre = PRE.search(browser.get("/ui/login").text)  # a good form token, from the sign-in page
        assert pre and browser.post(link, data={"pre": pre[1]}).status_code == 401


def test_the_submit_forms_limits_hold(server: ServerProc) -> None:
    """The CSRF check parsed the form with the default limits first (1000 files), and the
    submit path took 1 GiB urlencoded bodies into memory."""
    with WebClient(server) as web:
        files = [("input", (f"f{i}.txt", b"x")) for i in range(300)]
        r = web.http.post("/ui/submit", data={"csrf": web.csrf, "command": "true", "mode": "sh"}, files=files)
        assert r.status_code == 400 and "Too many files" in r.text
        big = web.http.post("/ui/submit", data={"csrf": web.csrf, "command": "x" * (2 << 20)})
        assert big.status_code == 413
    with server.api() as api:
        assert api.get("/api/v1/jobs").json()["jobs"] == []


def test_a_huge_working_dir_is_listed_in_part(server: ServerProc) -> None:
    with server.api() as api:
        job = api.post("/api/v1/jobs", json={"sh": "i=0; while [ $i -lt 1500 ]; do : > f$i; i=$((i+1)); done"})
    server.wait_state(job.json()["id"], {"succeeded"})
    with WebClient(server) as web:
        page = web.get(f"/ui/jobs/{job.json()['id']}").text
        assert page.count("/files/f") == 1000 and "500 more not listed" in page


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("by=day&until=9999-12-31", 200),  # the last day there is, whole
        ("since=0001-01-01T00:00:00%2B14:00", 422),
        ("since=9999-12-31T23:59:59-14:00", 422),
    ],
)
def test_dates_at_the_ends_of_time_are_not_500(server: ServerProc, query: str, status: int) -> None:
    with WebClient(server) as web, server.api() as api:
        assert web.get(f"/ui/usage?{query}").status_code == status
        assert web.get(f"/ui/usage.csv?{query}").status_code == status
        assert api.get(f"/api/v1/usage?{query}").status_code == status


def test_live_streams_are_capped_per_user(server: ServerProc, tmp_path: Path) -> None:
    with WebClient(server) as web:
        streams: list[Any] = []
        try:
            for _ in range(40):
                r = web.http.send(web.http.build_request("GET", "/ui/events"), stream=True)
                streams.append(r)
                if r.status_code == 429:
                    break
            assert [r.status_code for r in streams].count(200) == 32 and streams[-1].status_code == 429
        finally:
            for r in streams:
                r.close()
