"""The web dashboard in a real headless Chromium against a real `kran serve` (issue 22):
sign in, submit through the form and watch the job succeed live, read its log, download a
file, kill a running job, another user's job is not found, and no page breaks its CSP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import console_errors, sign_in, start_browser, wait_for
from tests.conftest import ServerProc

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    driver = start_browser(downloads)
    yield driver
    driver.quit()


def _by() -> Any:
    from selenium.webdriver.common.by import By

    return By


def test_submit_through_the_form_and_follow_the_job(server: ServerProc, browser: Any, downloads: Path) -> None:
    by = _by()
    creds = server.credentials
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.get(f"{server.url}/ui/submit")
    browser.find_element(by.ID, "f-command").send_keys("echo hello from the form; sleep 2; echo result > out.txt")
    browser.find_element(by.ID, "f-name").send_keys("form-job")
    browser.find_element(by.ID, "submit-button").click()
    wait_for(lambda: "/ui/jobs/" in browser.current_url, 10, "the job page")
    job_id = int(browser.current_url.rsplit("/", 1)[1])
    with server.api() as api:
        assert api.get(f"/api/v1/jobs/{job_id}").json()["name"] == "form-job"
    # the state changes on the page by itself (server-sent events), to succeeded
    wait_for(lambda: browser.find_element(by.ID, "job-state").text == "succeeded", 30, "succeeded on the page")
    wait_for(lambda: "hello from the form" in browser.find_element(by.ID, "log").text, 10, "the log")
    link = wait_for(lambda: browser.find_element(by.LINK_TEXT, "out.txt"), 10, "the file's link")
    link.click()
    got = wait_for(lambda: (downloads / "out.txt").exists() and (downloads / "out.txt").read_text(), 10, "download")
    assert got == "result\n"
    assert console_errors(browser) == []


def test_the_table_follows_states_live_and_kills_a_job(server: ServerProc, browser: Any) -> None:
    by = _by()
    creds = server.credentials
    with server.api() as api:
        long = api.post("/api/v1/jobs", json={"command": ["sleep", "60"], "name": "long"}).json()["id"]
        short = api.post("/api/v1/jobs", json={"command": ["sleep", "2"], "name": "short"}).json()["id"]
    server.wait_state(long, {"running"})
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.execute_script("window.kranMarker = 1")  # gone if the page reloads
    row = f'tr[data-job="{short}"] [data-state]'
    wait_for(lambda: browser.find_element(by.CSS_SELECTOR, row).text == "succeeded", 30, "short succeeded")
    assert browser.execute_script("return window.kranMarker") == 1  # live, not reloaded
    # a job submitted meanwhile is announced
    with server.api() as api:
        api.post("/api/v1/jobs", json={"command": ["true"]}).raise_for_status()
    wait_for(lambda: browser.find_element(by.ID, "live-note").is_displayed(), 10, "the new-jobs note")
    # select the long job and kill it (the confirm dialog accepted)
    browser.find_element(by.CSS_SELECTOR, f'input[name="id"][value="{long}"]').click()
    browser.find_element(by.ID, "kill-selected").click()
    browser.switch_to.alert.accept()
    server.wait_state(long, {"killed"}, timeout=30)
    wait_for(lambda: "Kill asked for 1 job" in browser.page_source, 10, "the notice")
    assert console_errors(browser) == []


def test_kill_from_the_job_page(server: ServerProc, browser: Any) -> None:
    by = _by()
    creds = server.credentials
    with server.api() as api:
        job_id = api.post("/api/v1/jobs", json={"sh": "echo started; sleep 60"}).json()["id"]
    server.wait_state(job_id, {"running"})
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.get(f"{server.url}/ui/jobs/{job_id}")
    wait_for(lambda: "started" in browser.find_element(by.ID, "log").text, 10, "the live log")
    browser.find_element(by.ID, "kill-job").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_element(by.ID, "job-state").text == "killed", 30, "killed on the page")
    with server.api() as api:
        assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "killed"


def test_another_users_job_page_is_not_found(server: ServerProc, browser: Any) -> None:
    by = _by()
    server.add_user("alice")
    bob = server.add_user("bob")
    with server.api("alice") as api:
        job_id = api.post("/api/v1/jobs", json={"command": ["true"], "name": "secret-name"}).json()["id"]
    sign_in(browser, server.url, *bob)
    browser.get(f"{server.url}/ui/jobs/{job_id}")
    assert browser.find_element(by.CSS_SELECTOR, "h1").text == "404"
    assert "secret-name" not in browser.page_source
    browser.get(f"{server.url}/ui/jobs")
    assert "secret-name" not in browser.page_source


def test_phone_width_and_keyboard(server: ServerProc, browser: Any) -> None:
    by = _by()
    creds = server.credentials
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.set_window_size(390, 844)
    try:
        browser.get(f"{server.url}/ui/jobs")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the page is {width} px wide at phone width"
        # the first Tab reaches the skip link, which leads to the content
        browser.find_element(by.TAG_NAME, "body").send_keys("\ue004")
        assert browser.switch_to.active_element.text == "Skip to content"
    finally:
        browser.set_window_size(1280, 900)


@pytest.mark.timeout(600)
def test_drain_a_node(swarm_server: ServerProc, browser: Any) -> None:
    """On the test swarm (the local engine has no nodes to drain): the admin drains a node
    and activates it again from the nodes page."""
    by = _by()
    server = swarm_server
    with server.api() as api:
        # a worker that is up (an earlier swarm test may have left one down: the fixture is shared)
        node = next(
            n for n in api.get("/api/v1/nodes").json()["nodes"] if n["role"] == "worker" and n["state"] == "ready"
        )
    node_id = node["id"]
    creds = server.credentials
    try:
        sign_in(browser, server.url, creds["key_id"], creds["secret"])
        browser.get(f"{server.url}/ui/nodes")
        browser.find_element(by.ID, f"drain-{node_id}").click()
        state = f'tr[data-node="{node_id}"] [data-node-state]'
        wait_for(lambda: "drain" in browser.find_element(by.CSS_SELECTOR, state).text, 10, "drained on the page")
        with server.api() as api:
            nodes = {n["id"]: n for n in api.get("/api/v1/nodes").json()["nodes"]}
            assert nodes[node_id]["availability"] == "drain"
        browser.find_element(by.ID, f"activate-{node_id}").click()
        wait_for(lambda: browser.find_element(by.CSS_SELECTOR, state).text == "ready", 10, "active again")
        assert console_errors(browser) == []
    finally:
        with server.api() as api:
            api.post(f"/api/v1/nodes/{node_id}/activate")


def test_the_usage_chart_is_drawn(server: ServerProc, browser: Any) -> None:
    by = _by()
    with server.api() as api:
        ids = [api.post("/api/v1/jobs", json={"sh": f"sleep 0.{n}", "name": f"u{n}"}).json()["id"] for n in range(3)]
    for job_id in ids:
        server.wait_state(job_id, {"succeeded"})
    creds = server.credentials
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.get(f"{server.url}/ui/usage?by=day")
    canvas = browser.find_element(by.ID, "usage-chart")
    drawn = wait_for(
        lambda: browser.execute_script(
            """const c = arguments[0], chart = Chart.getChart(c);
            if (!chart) return 0;
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
            return chart.data.datasets.some(d => d.data.some(v => v > 0)) ? n : 0;""",
            canvas,
        ),
        10,
        "a chart with data drawn",
    )
    assert drawn > 1000  # painted pixels: axes, labels and bars
    assert console_errors(browser) == []


def test_open_a_workflow_runs_graph(server: ServerProc, browser: Any, test_image: str) -> None:
    """A run's step graph: a box per step, each succeeded (states followed live), a step
    opening its job."""
    from tests.web.test_schedules_workflows import submit_run

    by = _by()
    run_id = submit_run(server, None, test_image)  # as the admin
    creds = server.credentials
    sign_in(browser, server.url, creds["key_id"], creds["secret"])
    browser.get(f"{server.url}/ui/workflows")
    browser.find_element(by.CSS_SELECTOR, f'tr[data-run="{run_id}"] a').click()
    wait_for(lambda: browser.find_elements(by.CSS_SELECTOR, "[data-dag-live] svg g.node"), 10, "the graph")
    steps = {"first", "left", "right", "gather"}

    def states() -> dict[str, str]:
        return {
            g.get_attribute("data-step"): g.find_element(by.CSS_SELECTOR, "[data-step-state]").text
            for g in browser.find_elements(by.CSS_SELECTOR, "[data-dag-live] svg g.node")
        }

    wait_for(lambda: set(states()) == steps, 10, "a box per step")
    wait_for(lambda: all(s.startswith("succeeded") or "2/2" in s for s in states().values()), 120, "all succeeded")
    edges = browser.find_elements(by.CSS_SELECTOR, "[data-dag-live] svg path.edge")
    assert len(edges) == 4
    browser.find_element(by.CSS_SELECTOR, '[data-dag-live] g.node[data-step="gather"] a').click()
    wait_for(lambda: "/ui/jobs/" in browser.current_url, 10, "the step's job page")
    assert browser.find_element(by.ID, "job-state").text == "succeeded"
    assert console_errors(browser) == []
