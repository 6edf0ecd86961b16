"""The dashboard's usage page (table, chart, CSV) and admin page (users, keys, accounts,
limits) over plain HTTP against a real `kran serve`; every change checked through the API."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from kran.web.pages.admin import limit_values
from kran.web.pages.usage import csv_text, filled_days, period_bound, safe_cell
from tests.conftest import ServerProc
from tests.web.webclient import WebClient

CHART = re.compile(r"<canvas id=\"usage-chart\"[^>]* data-chart='([^']*)'")
SECRET = re.compile(r'<code class="secret" id="new-secret">([^<]+)</code>')
KEY_ID = re.compile(r'id="new-key-id">([^<]+)<')
ALERT = re.compile(r'role="alert"[^>]*>([^<]*)<')
EVIL_APP = '=HYPERLINK("http://evil.test/?x","a,b")'


def escaped(text: str) -> str:
    """As Jinja's autoescape writes text into a page."""
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;")):
        text = text.replace(raw, entity)
    return text


def _finished(server: ServerProc, user: str | None, **body: Any) -> int:
    with server.api(user) as api:
        r = api.post("/api/v1/jobs", json={"command": ["true"], **body})
        r.raise_for_status()
    job_id: int = r.json()["id"]
    server.wait_state(job_id, {"succeeded"})
    return job_id


def _chart(page: str) -> dict[str, Any]:
    found = CHART.search(page)
    assert found, "no chart on the page"
    spec: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return spec


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _api_usage(server: ServerProc, user: str | None = None, **params: str) -> list[dict[str, Any]]:
    with server.api(user) as api:
        r = api.get("/api/v1/usage", params=params)
        r.raise_for_status()
    rows: list[dict[str, Any]] = r.json()["rows"]
    return rows


def _same_numbers(csv_rows: list[dict[str, str]], api_rows: list[dict[str, Any]], by: str) -> None:
    assert len(csv_rows) == len(api_rows)
    for got, want in zip(csv_rows, api_rows, strict=True):
        assert got[by].lstrip("'") == want["key"]
        for state, n in want["jobs"].items():
            assert int(got[state]) == n
        for metric in ("cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours"):
            assert float(got[metric]) == want[metric], metric


# ---- usage


def test_usage_by_user_and_by_day_with_a_chart_and_the_apis_numbers_in_csv(server: ServerProc) -> None:
    server.add_user("alice")
    server.add_user("bob")
    for _ in range(2):
        _finished(server, "alice")
    _finished(server, "bob", labels={"kran.app": EVIL_APP})
    with WebClient(server) as web:
        r = web.get("/ui/usage", params={"by": "user"})
        assert r.status_code == 200
        assert '<form method="get" action="/ui/usage" class="filters" id="usage-form"' in r.text
        table = r.text[r.text.index('<table id="usage-table">') :]
        assert ">alice</th>" in table and ">bob</th>" in table
        spec = _chart(r.text)
        assert spec["type"] == "bar" and spec["data"]["labels"] == ["alice", "bob"]
        jobs = next(d for d in spec["data"]["datasets"] if d["label"] == "jobs")
        assert jobs["data"] == [2, 1]
        assert any(any(v > 0 for v in d["data"]) for d in spec["data"]["datasets"] if d["label"] != "jobs")
        assert 'id="usage-csv" href="/ui/usage.csv?by=user"' in r.text

        by_day = web.get("/ui/usage", params={"by": "day"})
        (today,) = [row["key"] for row in _api_usage(server, by="day")]
        assert by_day.status_code == 200 and f">{today}</th>" in by_day.text
        assert sum(next(d for d in _chart(by_day.text)["data"]["datasets"] if d["label"] == "jobs")["data"]) == 3

        exported = web.get("/ui/usage.csv", params={"by": "user"})
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        assert exported.headers["content-disposition"] == 'attachment; filename="kran-usage-by-user.csv"'
        _same_numbers(_csv(exported.text), _api_usage(server, by="user"), "user")

        # an app name a spreadsheet would run: quoted in the CSV, escaped in the page
        by_app = web.get("/ui/usage.csv", params={"by": "app"})
        rows = _csv(by_app.text)
        _same_numbers(rows, _api_usage(server, by="app"), "app")
        assert "'" + EVIL_APP in [row["app"] for row in rows]
        assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row.values())
        page = web.get("/ui/usage", params={"by": "app"}).text
        assert EVIL_APP not in page and escaped(EVIL_APP) in page


def test_a_whole_days_period_counts_its_last_day(server: ServerProc) -> None:
    _finished(server, None)
    (today,) = [row["key"] for row in _api_usage(server, by="day")]
    tomorrow = (date.fromisoformat(today) + timedelta(days=1)).isoformat()
    with WebClient(server) as web:
        r = web.get("/ui/usage.csv", params={"by": "user", "since": today, "until": today})
        assert r.status_code == 200
        _same_numbers(_csv(r.text), _api_usage(server, by="user", since=today, until=tomorrow), "user")
        assert len(_csv(r.text)) == 1
        earlier = web.get("/ui/usage", params={"since": "2020-01-01", "until": "2020-01-31"})
        assert earlier.status_code == 200 and "No usage in this period." in earlier.text
        assert 'id="usage-chart"' not in earlier.text


def test_a_user_sees_only_their_own_usage(server: ServerProc) -> None:
    server.add_user("carol")
    server.add_user("dave")
    _finished(server, "carol")
    _finished(server, "dave", name="daves-job")
    with WebClient(server, "carol") as web:
        r = web.get("/ui/usage", params={"by": "user"})
        assert r.status_code == 200 and ">carol</th>" in r.text and "dave" not in r.text
        assert [row["user"] for row in _csv(web.get("/ui/usage.csv", params={"by": "user"}).text)] == ["carol"]
        # the day view (a user's first) counts only carol's one job
        spec = _chart(web.get("/ui/usage").text)
        assert sum(next(d for d in spec["data"]["datasets"] if d["label"] == "jobs")["data"]) == 1
        # another user's usage: refused as the API refuses it
        with server.api("carol") as api:
            refused = api.get("/api/v1/usage", params={"user": "dave"})
        page = web.get("/ui/usage", params={"user": "dave"})
        assert page.status_code == refused.status_code == 403 and "dave" not in ALERT.findall(page.text)[0]
        assert web.get("/ui/usage.csv", params={"user": "dave"}).status_code == 403


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "2026-13-01"}, "since: '2026-13-01' is not an ISO 8601 date-time"),
        ({"until": "yesterday"}, "until: 'yesterday' is not an ISO 8601 date-time"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until must be after since"),
        ({"by": "planet"}, "by must be one of user, account, app, day, image, array"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(module_server: ServerProc, params: dict[str, str], reason: str) -> None:
    with WebClient(module_server) as web:
        r = web.get("/ui/usage", params=params)
        assert r.status_code == 422 and html.unescape(ALERT.findall(r.text)[0]).startswith(reason)
        assert 'id="usage-form"' in r.text  # the form again, to mend
        exported = web.get("/ui/usage.csv", params=params)
        assert exported.status_code == 422 and exported.headers["content-type"].startswith("text/html")
        assert "Traceback" not in r.text + exported.text


def test_csv_cells_are_quoted_and_formulas_neutralised() -> None:
    rows = [
        {"key": k, "jobs": {"succeeded": 1}, "cpu_hours": 0.5, "mem_gb_hours": 0.0, "gpu_hours": 0.0, "wall_hours": 1.0}
        for k in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", 'a "b", c\nd', "plain")
    ]
    parsed = list(csv.reader(io.StringIO(csv_text(rows, "app"))))
    assert parsed[0] == ["app", "succeeded", "cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours"]
    assert [r[0] for r in parsed[1:]] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", 'a "b", c\nd', "plain"]
    assert parsed[1][1:] == ["1", "0.5", "0.0", "0.0", "1.0"]
    assert safe_cell(-1.5) == -1.5  # numbers are numbers


def test_periods_and_quiet_days() -> None:
    assert period_bound("", "since") is None
    assert period_bound("2026-01-01", "since") == period_bound("2026-01-01T00:00:00Z", "since")
    assert period_bound("2026-01-01", "until", end=True) == period_bound("2026-01-02T00:00:00Z", "until")
    assert period_bound("2026-01-01T12:00:00+00:00", "until", end=True) == 1767268800.0
    zero = {"cpu_hours": 0.0, "mem_gb_hours": 0.0, "gpu_hours": 0.0, "wall_hours": 0.0}
    rows = [{"key": "2026-01-30", "jobs": {"failed": 1}, **zero}, {"key": "2026-02-02", "jobs": {}, **zero}]
    assert [r["key"] for r in filled_days(rows)] == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
    week = filled_days(rows[:1], date(2026, 1, 28), date(2026, 2, 3))
    assert [r["key"] for r in week][:3] == ["2026-01-28", "2026-01-29", "2026-01-30"] and len(week) == 7
    assert week[2] is rows[0] and week[0]["jobs"] == {} and week[0]["cpu_hours"] == 0.0
    far = [rows[0], {**rows[1], "key": "2028-01-01"}]
    assert filled_days(far) == far


# ---- admin


def _users(server: ServerProc) -> dict[str, dict[str, Any]]:
    with server.api() as api:
        return {u["name"]: u for u in api.get("/api/v1/admin/users").json()["users"]}


def _keys(server: ServerProc) -> dict[str, dict[str, Any]]:
    with server.api() as api:
        return {k["key_id"]: k for k in api.get("/api/v1/admin/keys").json()["keys"]}


def _whoami(server: ServerProc, key_id: str, secret: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/whoami", headers=server.bearer(key_id, secret))


def test_admin_adds_a_user_and_a_key_whose_secret_is_shown_once(server: ServerProc) -> None:
    with WebClient(server) as web:
        home = web.get("/ui/admin")
        assert home.status_code == 200
        for section in ("users", "keys", "accounts", "limits"):
            assert f'<section id="{section}"' in home.text
        r = web.post("/ui/admin/users", {"name": "erin", "role": "service"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/admin?done=user-added")
        assert _users(server)["erin"]["role"] == "service"
        assert "User added." in web.get(r.headers["location"]).text

        made = web.post("/ui/admin/keys", {"user": "erin"})
        assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
        secret, key_id = SECRET.search(made.text), KEY_ID.search(made.text)
        assert secret and key_id
        listed = _keys(server)[key_id[1]]
        assert (listed["user"], listed["revoked"]) == ("erin", False)
        who = _whoami(server, key_id[1], secret[1])
        assert who.status_code == 200 and who.json() == {"user": "erin", "role": "service"}
        again = web.get("/ui/admin")
        assert secret[1] not in again.text and key_id[1] in again.text and 'id="new-secret"' not in again.text

        revoked = web.post("/ui/admin/keys/revoke", {"key_id": key_id[1]})
        assert revoked.status_code == 303
        assert _keys(server)[key_id[1]]["revoked"] is True
        assert _whoami(server, key_id[1], secret[1]).status_code == 401

        # a user and a key in one form
        both = web.post("/ui/admin/users", {"name": "frank", "role": "user", "with_key": "on"})
        assert both.status_code == 200 and both.headers["cache-control"] == "no-store"
        secret, key_id = SECRET.search(both.text), KEY_ID.search(both.text)
        assert secret and key_id
        assert _whoami(server, key_id[1], secret[1]).json() == {"user": "frank", "role": "user"}

        assert web.post("/ui/admin/users/disable", {"name": "frank"}).status_code == 303
        assert _users(server)["frank"]["disabled"] is True
        assert _whoami(server, key_id[1], secret[1]).status_code == 401
        assert web.post("/ui/admin/users/enable", {"name": "frank"}).status_code == 303
        assert _users(server)["frank"]["disabled"] is False
        assert _whoami(server, key_id[1], secret[1]).status_code == 200


def _account(api: httpx.Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in api.get("/api/v1/accounts").json()["accounts"] if a["name"] == name)
    return found


def test_admin_manages_accounts_members_and_shares(server: ServerProc) -> None:
    server.add_user("gina")
    with WebClient(server) as web:
        assert (
            web.post("/ui/admin/accounts", {"name": "physics", "shares": "2", "description": "<b>x</b>"}).status_code
            == 303
        )
        assert (
            web.post("/ui/admin/accounts/members", {"account": "physics", "user": "gina", "shares": "3"}).status_code
            == 303
        )
        with server.api() as api:
            acct = _account(api, "physics")
            assert acct == {"name": "physics", "shares": 2, "description": "<b>x</b>", "users": ["gina"]}
            (row,) = api.get("/api/v1/share", params={"user": "gina"}).json()["associations"]
            assert (row["account"], row["account_shares"], row["shares"]) == ("physics", 2, 3)
        page = web.get("/ui/admin").text
        assert 'data-account="physics"' in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
        assert web.post("/ui/admin/accounts/change", {"name": "physics", "shares": "5"}).status_code == 303
        assert web.post("/ui/admin/accounts/members/remove", {"account": "physics", "user": "gina"}).status_code == 303
        with server.api() as api:
            acct = _account(api, "physics")
            assert acct["shares"] == 5 and acct["users"] == []


def test_admin_sets_and_clears_limits(server: ServerProc) -> None:
    server.add_user("hank")

    def limits() -> dict[tuple[str, str], dict[str, Any]]:
        with server.api() as api:
            return {(r["scope"], r["name"]): r for r in api.get("/api/v1/limits").json()["limits"]}

    with WebClient(server) as web:
        r = web.post(
            "/ui/admin/limits",
            {"scope": "user", "name": "hank", "max_running_jobs": "3", "max_running_cpus": "1.5", "max_wall_s": "2h"},
        )
        assert r.status_code == 303
        got = limits()[("user", "hank")]
        assert (got["max_running_jobs"], got["max_running_cpus"], got["max_wall_s"]) == (3, 1.5, 7200)
        assert web.post("/ui/admin/limits", {"scope": "default", "max_queued_jobs": "100"}).status_code == 303
        assert limits()[("default", "")]["max_queued_jobs"] == 100
        # clear one: the others stay
        assert (
            web.post("/ui/admin/limits", {"scope": "user", "name": "hank", "clear": "max_running_jobs"}).status_code
            == 303
        )
        got = limits()[("user", "hank")]
        assert got["max_running_jobs"] is None and got["max_wall_s"] == 7200
        assert 'data-scope="user" data-name="hank"' in web.get("/ui/admin").text
        # clear all of a scope
        assert web.post("/ui/admin/limits/clear", {"scope": "user", "name": "hank"}).status_code == 303
        assert ("user", "hank") not in limits() and ("default", "") in limits()


def test_a_non_admin_is_refused_as_the_api_refuses_them(server: ServerProc) -> None:
    server.add_user("ivan")
    victim_key, _ = server.add_user("judy")
    with server.api() as api:
        api.post("/api/v1/accounts", json={"name": "bio"}).raise_for_status()
        api.put("/api/v1/limits", json={"scope": "user", "name": "judy", "max_running_jobs": 2}).raise_for_status()
    with server.api("ivan") as api:
        api_answer = api.get("/api/v1/admin/users")
    before = (_users(server), _keys(server), limits_of(server), accounts_of(server))
    posts = {
        "/ui/admin/users": {"name": "mallory", "role": "admin", "with_key": "on"},
        "/ui/admin/users/disable": {"name": "judy"},
        "/ui/admin/keys": {"user": "judy"},
        "/ui/admin/keys/revoke": {"key_id": victim_key},
        "/ui/admin/accounts": {"name": "ivans"},
        "/ui/admin/accounts/change": {"name": "bio", "shares": "100"},
        "/ui/admin/accounts/members": {"account": "bio", "user": "ivan"},
        "/ui/admin/accounts/members/remove": {"account": "bio", "user": "judy"},
        "/ui/admin/limits": {"scope": "user", "name": "ivan", "max_running_jobs": "1000"},
        "/ui/admin/limits/clear": {"scope": "user", "name": "judy"},
    }
    with WebClient(server, "ivan") as web:
        page = web.get("/ui/admin")
        assert page.status_code == api_answer.status_code == 403
        assert ALERT.findall(page.text) == [api_answer.json()["error"]]
        assert 'href="/ui/admin"' not in web.get("/ui/jobs").text
        for path, data in posts.items():
            r = web.post(path, data)
            assert r.status_code == 403 and ALERT.findall(r.text) == ["admin only"], path
            assert "new-secret" not in r.text and "judy" not in r.text
    assert (_users(server), _keys(server), limits_of(server), accounts_of(server)) == before


def limits_of(server: ServerProc) -> Any:
    with server.api() as api:
        return api.get("/api/v1/limits").json()


def accounts_of(server: ServerProc) -> Any:
    with server.api() as api:
        return api.get("/api/v1/accounts").json()


def test_a_forged_csrf_token_changes_nothing(server: ServerProc) -> None:
    key_id, _ = server.add_user("kim")
    before = (_users(server), _keys(server))
    with WebClient(server) as web:
        for path, data in (
            ("/ui/admin/users", {"name": "mallory", "role": "admin"}),
            ("/ui/admin/keys", {"user": "kim"}),
            ("/ui/admin/keys/revoke", {"key_id": key_id}),
            ("/ui/admin/users/disable", {"name": "kim"}),
        ):
            r = web.http.post(path, data={"csrf": "forged", **data})
            assert r.status_code == 403 and "CSRF" in r.text and "new-secret" not in r.text, path
        cross_site = {"origin": "http://evil.test"}
        limit = {"csrf": web.csrf, "scope": "default", "max_queued_jobs": "1"}
        r = web.http.post("/ui/admin/limits", data=limit, headers=cross_site)
        assert r.status_code == 403
    assert (_users(server), _keys(server)) == before
    assert limits_of(server) == {"limits": []}


@pytest.mark.parametrize(
    ("path", "data", "status", "reason"),
    [
        ("/ui/admin/users", {"name": "bad name!", "role": "user"}, 422, "a user name is 1-100 of letters"),
        ("/ui/admin/users", {"name": "", "role": "user"}, 422, "a user name is 1-100 of letters"),
        ("/ui/admin/users", {"name": "root", "role": "superuser"}, 422, "role must be admin, user or service"),
        ("/ui/admin/users", {"name": "admin", "role": "user"}, 409, "user 'admin' exists already"),
        ("/ui/admin/keys", {"user": "nobody"}, 404, "user 'nobody' not found"),
        ("/ui/admin/keys/revoke", {"key_id": "kk_nope"}, 404, "key 'kk_nope' not found"),
        ("/ui/admin/users/disable", {"name": "nobody"}, 404, "user 'nobody' not found"),
        ("/ui/admin/accounts", {"name": "-bad", "shares": "1"}, 422, "name: 1-64 letters"),
        ("/ui/admin/accounts", {"name": "ok", "shares": "-1"}, 422, "shares: Input should be greater than"),
        ("/ui/admin/accounts", {"name": "ok", "shares": "many"}, 422, "shares: 'many' is not a whole number"),
        ("/ui/admin/accounts/change", {"name": "nope", "shares": "1"}, 404, "account nope not found"),
        ("/ui/admin/accounts/members", {"account": "nope", "user": "admin"}, 404, "account nope not found"),
        ("/ui/admin/limits", {"scope": "user", "name": "a", "max_running_jobs": "-1"}, 422, "max_running_jobs: Input"),
        ("/ui/admin/limits", {"scope": "user", "name": "a", "max_running_cpus": "nan"}, 422, "max_running_cpus: Input"),
        ("/ui/admin/limits", {"scope": "user", "name": "a", "max_wall_s": "soon"}, 422, "max_wall_s: "),
        ("/ui/admin/limits", {"scope": "user", "name": "a", "max_queued_jobs": "1e3"}, 422, "max_queued_jobs: '1e3'"),
        ("/ui/admin/limits", {"scope": "planet", "name": "a", "max_running_jobs": "1"}, 422, "scope: one of default"),
        ("/ui/admin/limits", {"scope": "user", "name": "", "max_running_jobs": "1"}, 422, "name: 1-200 characters"),
        ("/ui/admin/limits", {"scope": "user", "name": "a"}, 422, "give a limit to set or tick one to clear"),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(
    module_server: ServerProc, path: str, data: dict[str, str], status: int, reason: str
) -> None:
    server = module_server  # every case a refusal: the limits and accounts stay as they were
    with WebClient(server) as web:
        r = web.post(path, data)
        assert r.status_code == status, r.text
        (said,) = ALERT.findall(r.text)
        assert html.unescape(said).startswith(reason), said
        assert '<section id="users"' in r.text and "Traceback" not in r.text
    with server.api() as api:
        assert api.get("/api/v1/limits").json() == {"limits": []}
        assert [a["name"] for a in api.get("/api/v1/accounts").json()["accounts"]] == ["default"]


def test_limit_form_values() -> None:
    form = {"max_running_jobs": " 4 ", "max_running_cpus": "0.5", "max_wall_s": "1h30m", "max_priority": "-10"}
    assert limit_values(form, ["max_queued_jobs"]) == {
        "max_running_jobs": 4,
        "max_running_cpus": 0.5,
        "max_queued_jobs": None,
        "max_wall_s": 5400.0,
        "max_priority": -10,
    }
    with pytest.raises(Exception, match="not both"):
        limit_values({"max_running_jobs": "1"}, ["max_running_jobs"])
    with pytest.raises(Exception, match="unknown limit"):
        limit_values({}, ["max_everything"])
