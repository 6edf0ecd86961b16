"""Apps: load, versions, defaults and overrides, enable/disable, ownership, user, grace."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tests.conftest import ServerProc


def test_run_in_an_app_and_versions(kran: Any, server: ServerProc, test_image: str) -> None:
    r = kran("app", "load", "greet", "--image", test_image, "--env", "GREETING=hello", "--cpus", "1", "--mem", "64")
    assert r.exit_code == 0, r.output
    r = kran("run", "--app", "greet", "--sh", 'echo "$GREETING from $KRAN_APP, $KRAN_MEM_MB MiB"')
    assert r.exit_code == 0, r.output
    assert "hello from greet, 64 MiB" in r.output
    first = json.loads(kran("jobs", "-o", "json").output)[0]
    assert (first["app"], first["app_version"], first["labels"]["kran.app"]) == ("greet", 1, "greet")

    # a re-load makes version 2; jobs keep the version they were submitted with
    assert kran("app", "load", "greet", "--image", test_image, "--env", "GREETING=bye").exit_code == 0
    r = kran("run", "--app", "greet", "--sh", 'echo "$GREETING"')
    assert r.output.strip() == "bye"
    # the job's own options win over the app's
    r = kran("run", "--app", "greet", "--env", "GREETING=own", "--mem", "32", "--sh", 'echo "$GREETING $KRAN_MEM_MB"')
    assert r.output.strip() == "own 32"
    jobs = json.loads(kran("jobs", "-o", "json").output)
    assert [j["app_version"] for j in jobs] == [2, 2, 1]
    assert json.loads(kran("job", str(first["id"]), "-o", "json").output)["app_version"] == 1

    shown = json.loads(kran("app", "show", "greet", "-o", "json").output)
    assert shown["version"] == 2 and shown["versions"] == [1, 2] and shown["defaults"]["env"] == {"GREETING": "bye"}
    listed = kran("app", "list")
    assert "greet" in listed.output and "2" in listed.output


def test_disable_unload_and_ownership(kran: Any, server: ServerProc, test_image: str) -> None:
    server.add_user("alice")
    server.add_user("bob")
    assert kran("app", "load", "tool", "--image", test_image, user="alice").exit_code == 0
    assert kran("app", "load", "secret", "--image", test_image, "--private", user="alice").exit_code == 0

    r = kran("app", "disable", "tool", user="bob")
    assert r.exit_code != 0 and "belongs to alice" in r.output
    # names are per owner; a shared name is unique among the shared apps (all see them)
    r = kran("app", "load", "tool", "--image", "other", user="bob")
    assert r.exit_code != 0 and "a shared app 'tool' exists already" in r.output
    assert kran("run", "--app", "tool", "--", "true", user="bob").exit_code == 0  # shared: bob may run it
    r = kran("submit", "--app", "secret", "--", "true", user="bob")
    assert r.exit_code != 0 and "not loaded" in r.output  # private: bob does not even see it
    assert "secret" not in kran("app", "list", user="bob").output

    assert kran("app", "disable", "tool", user="alice").exit_code == 0
    r = kran("submit", "--app", "tool", "--", "true", user="bob")
    assert r.exit_code != 0 and "disabled" in r.output
    assert kran("app", "enable", "tool").exit_code == 0  # an admin may
    assert kran("submit", "--app", "tool", "--", "true", user="bob").exit_code == 0

    assert kran("app", "unload", "tool", user="alice").exit_code == 0
    r = kran("submit", "--app", "tool", "--", "true", user="bob")
    assert r.exit_code != 0 and "app 'tool' is not loaded" in r.output
    r = kran("app", "load", "Bad Name", "--image", test_image)
    assert r.exit_code != 0 and "name" in r.output


def test_app_user_and_grace(kran: Any, server: ServerProc) -> None:
    server.add_user("carol")
    r = kran("app", "load", "rooty", "--user", "0", user="carol")
    assert r.exit_code != 0 and "only an admin" in r.output
    assert kran("app", "load", "as4242", "--user", "4242:4243", "--grace", "1s").exit_code == 0
    r = kran("run", "--app", "as4242", "--sh", "id -u; id -g")
    assert r.exit_code == 0, r.output
    assert r.output.split() == ["4242", "4243"]

    # the app's grace: a job ignoring SIGTERM is SIGKILLed after 1 s, not the default 10 s
    job = int(kran("submit", "--app", "as4242", "--sh", "trap '' TERM; sleep 60 & wait; sleep 60").output)
    server.wait_state(job, {"running"})
    time.sleep(0.5)
    asked = time.monotonic()
    assert kran("kill", str(job)).exit_code == 0
    server.wait_state(job, {"killed"}, timeout=8)
    assert time.monotonic() - asked < 8


def test_volume_persists_is_exclusive_and_has_a_quota(
    kran: Any, server: ServerProc, test_image: str, docker_client: Any
) -> None:
    r = kran("app", "load", "db", "--image", test_image, "--volume", "store:16", "--mem", "64")
    assert r.exit_code == 0, r.output
    r = kran("run", "--app", "db", "--sh", 'echo kept > "$KRAN_VOLUME/state"; df -k "$KRAN_VOLUME" | tail -1')
    assert r.exit_code == 0, r.output
    r = kran("run", "--app", "db", "--sh", 'cat "$KRAN_VOLUME/state"')
    assert r.output.strip() == "kept"

    # one job at a time on a volume: the second waits and says why
    first = int(kran("submit", "--app", "db", "--", "sleep", "3").output)
    second = int(kran("submit", "--app", "db", "--", "true").output)
    server.wait_state(first, {"running"})
    job = json.loads(kran("job", str(second), "-o", "json").output)
    assert job["state"] == "queued" and f"in use by job {first}" in job["waiting_because"]
    server.wait_state(second, {"succeeded"})
    assert (
        json.loads(kran("job", str(second), "-o", "json").output)["started_at"]
        >= json.loads(kran("job", str(first), "-o", "json").output)["finished_at"]
    )

    # past the quota: the job fails with the reason; a job beside it is unaffected
    other = int(kran("submit", "--image", test_image, "--", "sh", "-c", "sleep 1; echo fine").output)
    filler = int(kran("submit", "--app", "db", "--sh", 'dd if=/dev/zero of="$KRAN_VOLUME/big" bs=1M count=40').output)
    job = server.wait_state(filler, {"failed", "succeeded"})
    assert job["state"] == "failed" and "volume db/store is full" in job["reason"], job["reason"]
    assert server.wait_state(other, {"succeeded"})["state"] == "succeeded"
    shown = json.loads(kran("app", "show", "db", "-o", "json").output)
    assert shown["volume"]["size_mb"] == 16 and shown["volume"]["used_mb"] >= 10

    img = server.data_dir / "volumes" / "~admin" / "db" / "store.img"  # per owner
    assert img.exists()
    assert kran("app", "unload", "db", "--keep-volume").exit_code == 0
    assert img.exists() and not os.path.ismount(img.with_suffix(""))
    assert kran("app", "load", "db", "--image", test_image, "--volume", "store:16").exit_code == 0
    r = kran("run", "--app", "db", "--sh", 'cat "$KRAN_VOLUME/state"')
    assert r.output.strip() == "kept"  # a kept volume is found again
    assert kran("app", "unload", "db").exit_code == 0
    assert not img.exists()
