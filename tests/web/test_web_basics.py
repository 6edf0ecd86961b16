"""The dashboard over plain HTTP against a real `kran serve`: sign-in, sessions, CSRF,
headers, and the API's rules for what a user may see."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ServerProc
from tests.web.webclient import PRE, WebClient

STATIC = Path(__file__).parents[2] / "src" / "kran" / "web" / "static"


def test_signs_in_with_a_key_and_out_again(server: ServerProc) -> None:
    with httpx.Client(base_url=server.url) as anon:
        r = anon.get("/ui/jobs")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    with WebClient(server) as web:
        page = web.get("/ui/jobs")
        assert page.status_code == 200 and "Jobs" in page.text
        cookie = next(c for c in web.http.cookies.jar if c.name == "kran_session")
        assert cookie.path == "/ui" and cookie.has_nonstandard_attr("HttpOnly")
        creds = server.credentials
        assert creds["secret"] not in page.text  # no secret is ever written into a page
        out = web.post("/ui/logout")
        assert out.status_code == 303
        # the old token no longer works, even if the browser kept it
        again = httpx.get(f"{server.url}/ui/jobs", cookies={"kran_session": cookie.value or ""})
        assert again.status_code == 303


def test_a_wrong_secret_is_refused_with_a_reason(server: ServerProc) -> None:
    with httpx.Client(base_url=server.url) as anon:
        pre = PRE.search(anon.get("/ui/login").text)
        assert pre
        r = anon.post("/ui/login", data={"key_id": server.credentials["key_id"], "secret": "x" * 40, "pre": pre[1]})
        assert r.status_code == 401 and "invalid key id or secret" in r.text
        assert "kran_session" not in r.cookies


def test_forms_without_the_csrf_token_change_nothing(server: ServerProc) -> None:
    with server.api() as api:
        job_id = api.post("/api/v1/jobs", json={"command": ["sleep", "30"]}).json()["id"]
    with WebClient(server) as web:
        r = web.http.post(f"/ui/jobs/{job_id}/kill", data={"csrf": "forged"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = web.http.post(f"/ui/jobs/{job_id}/kill", data={"csrf": web.csrf}, headers={"origin": "http://evil.test"})
        assert r.status_code == 403
        assert server.wait_state(job_id, {"running", "queued", "starting"})["state"] != "killed"
        ok = web.post(f"/ui/jobs/{job_id}/kill")
        assert ok.status_code == 303
        server.wait_state(job_id, {"killed"})


def test_the_sign_in_form_needs_its_own_token(server: ServerProc) -> None:
    creds = server.credentials
    r = httpx.post(f"{server.url}/ui/login", data={"key_id": creds["key_id"], "secret": creds["secret"], "pre": "x"})
    assert r.status_code == 403 and "kran_session" not in r.cookies


def test_security_headers_on_every_page(server: ServerProc) -> None:
    with WebClient(server) as web:
        for path in ("/ui/login", "/ui/jobs", "/ui/submit", "/ui/static/kran.js"):
            h = web.get(path).headers
            assert "script-src 'self'" in h["content-security-policy"], path
            assert "'unsafe-inline'" not in h["content-security-policy"]
            assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert web.get("/ui/jobs").headers["cache-control"] == "no-store"
        html = web.get("/ui/submit").text
        assert not re.search(r"<script>|<script [^>]*>[^<]", html) and " style=" not in html and "<style" not in html


def test_another_users_job_is_not_found(server: ServerProc) -> None:
    server.add_user("alice")
    server.add_user("bob")
    with server.api("alice") as api:
        job_id = api.post("/api/v1/jobs", json={"command": ["true"], "name": "alices"}).json()["id"]
    with WebClient(server, "bob") as bob:
        mine = bob.get(f"/ui/jobs/{job_id}")
        missing = bob.get("/ui/jobs/999999")
        assert mine.status_code == missing.status_code == 404
        said = re.compile(r'role="alert">([^<]*)<')
        assert said.findall(mine.text) == [f"job {job_id} not found"]
        assert said.findall(missing.text) == ["job 999999 not found"]
        assert "alices" not in bob.get("/ui/jobs").text
        assert bob.get(f"/ui/jobs/{job_id}/log").status_code == 404
        assert bob.get(f"/ui/submit?from={job_id}").status_code == 404
        killed = bob.post("/ui/jobs/kill", {"id": str(job_id)})
        assert killed.status_code == 303 and "killed=0" in killed.headers["location"]
    with WebClient(server, "alice") as alice:
        assert "alices" in alice.get("/ui/jobs").text


def test_a_one_time_link_signs_in_once(server: ServerProc) -> None:
    server.add_user("carol")
    with server.api("carol") as api:
        link = api.post("/api/v1/web/links", json={}).json()
    assert link["url"].startswith(server.url + "/ui/link/")
    path = link["url"][len(server.url) :]
    with httpx.Client(base_url=server.url) as browser:
        form = browser.get(path)
        assert form.status_code == 200
        pre = PRE.search(form.text)
        assert pre
        r = browser.post(path, data={"pre": pre[1]})
        assert r.status_code == 303
        assert "carol" in browser.get("/ui/jobs").text
    with httpx.Client(base_url=server.url) as other:
        used = other.get(path)
        assert used.status_code == 401 and "used or expired" in used.text and "Sign in as" not in used.text
        pre = PRE.search(other.get("/ui/login").text)
        assert pre
        again = other.post(path, data={"pre": pre[1]})
        assert again.status_code == 401 and "used or expired" in again.text


def test_a_link_for_another_user_is_an_admins(server: ServerProc) -> None:
    server.add_user("dave")
    server.add_user("erin")
    with server.api("dave") as api:
        refused = api.post("/api/v1/web/links", json={"user": "erin"})
        missing = api.post("/api/v1/web/links", json={"user": "nobody"})
        assert refused.status_code == missing.status_code == 404
        assert refused.json()["error"].replace("erin", "X") == missing.json()["error"].replace("nobody", "X")
    with server.api() as admin:
        assert admin.post("/api/v1/web/links", json={"user": "erin"}).status_code == 201


def test_revoking_the_key_ends_its_sessions(server: ServerProc) -> None:
    key_id, _ = server.add_user("frank")
    with WebClient(server, "frank") as web:
        assert web.get("/ui/jobs").status_code == 200
        with server.api() as admin:
            admin.post(f"/api/v1/admin/keys/{key_id}/revoke").raise_for_status()
        assert web.get("/ui/jobs").status_code == 303


def test_downloads_are_attachments_not_pages(server: ServerProc) -> None:
    with server.api() as api:
        job_id = api.post("/api/v1/jobs", json={"sh": "echo '<script>alert(1)</script>' > x.html"}).json()["id"]
    server.wait_state(job_id, {"succeeded"})
    with WebClient(server) as web:
        r = web.get(f"/ui/jobs/{job_id}/files/x.html")
        assert r.status_code == 200 and b"<script>" in r.content
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith("attachment")


def test_vendored_libraries_are_the_pinned_ones() -> None:
    table = (STATIC / "vendor" / "VENDOR.md").read_text()
    pinned = re.findall(r"^\| (\S+\.js) \| .* \| ([0-9a-f]{64}) \|$", table, re.M)
    for name, digest in pinned:
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    assert sorted(n for n, _ in pinned) == sorted(p.name for p in (STATIC / "vendor").glob("*.js"))


def test_a_fragment_refresh_after_the_session_ended_sends_the_page_to_sign_in(server: ServerProc) -> None:
    r = httpx.get(f"{server.url}/ui/nodes/table", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/ui/login")


def _job_events(web: WebClient, url: str, headers: dict[str, str] | None = None, until: str = "") -> list[str]:
    """The `id: N` + `job` event blocks of a live stream, read until one contains `until`
    (or 10 s of it)."""
    got: list[str] = []
    with web.http.stream("GET", url, headers=headers or {}, timeout=10) as stream:
        buf = ""
        try:
            for text in stream.iter_text():
                buf += text
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    if "event: job" in block:
                        got.append(block)
                        if until and until in block:
                            return got
        except httpx.ReadTimeout:
            pass
    return got


def test_a_pages_live_state_misses_no_change_made_before_its_stream_opened(server: ServerProc) -> None:
    """The job page's stream began at the event read when it opened: a job killed between
    the page and its stream (a kill from the page is quick) stayed `running` on the page."""
    with server.api() as api:
        job = api.post("/api/v1/jobs", json={"command": ["sleep", "60"]}).json()["id"]
    server.wait_state(job, {"running"})
    with WebClient(server) as web:
        html = web.get(f"/ui/jobs/{job}").text
        found = re.search(r'data-job-live="\d+" data-after="(\d+)"', html)
        assert found, html
        after = int(found[1])
        with server.api() as api:
            api.post(f"/api/v1/jobs/{job}/kill").raise_for_status()
        server.wait_state(job, {"killed"})
        got = _job_events(web, f"/ui/events?job={job}&after={after}", until='"to": "killed"')
        assert got and '"to": "killed"' in got[-1]
        # a browser reconnecting sends the last id it saw: the stream goes on after it
        first = int(got[0].split("\n")[0].removeprefix("id: "))
        again = _job_events(web, f"/ui/events?job={job}&after={after}", {"Last-Event-ID": str(first)}, '"killed"')
        assert [int(b.split("\n")[0].removeprefix("id: ")) for b in again] == [
            int(b.split("\n")[0].removeprefix("id: ")) for b in got[1:]
        ]
        table = web.get("/ui/jobs").text
        assert re.search(r'id="jobs-table" data-live="/ui/events" data-after="\d+"', table)


def test_a_stream_asked_to_start_past_the_last_event_still_goes_live(server: ServerProc) -> None:
    """An `after` (or a reconnect's Last-Event-ID, after a restore) beyond the stored events
    dropped every live event as already seen."""
    with server.api() as api:
        job = api.post("/api/v1/jobs", json={"command": ["sleep", "60"]}).json()["id"]
    server.wait_state(job, {"running"})
    with WebClient(server) as web:
        got: list[str] = []
        reader = threading.Thread(
            target=lambda: got.extend(_job_events(web, f"/ui/events?job={job}&after=1000000000000", until='"killed"'))
        )
        reader.start()
        time.sleep(1)
        with server.api() as api:
            api.post(f"/api/v1/jobs/{job}/kill").raise_for_status()
        reader.join(20)
        assert got and '"to": "killed"' in got[-1]
