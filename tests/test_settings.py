"""Server settings: sections as in the TOML file, their sources and precedence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kran.errors import InvalidInput
from kran.settings import SECTIONS
from kran.settings_sources import describe, env_name, keys, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("KRAN_"):
            monkeypatch.delenv(var)


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kran.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_documented_ones() -> None:
    s, origin = load_settings()
    assert (s.server.host, s.server.port, s.server.engine) == ("127.0.0.1", 9090, "local")
    assert s.queue.max == 65536 and s.files.retention_s == 7 * 86400 and s.cluster.placement == "spread"
    assert s.image.size_classes == [("heavyweight", 1 << 30)] and s.local.job_uid_range == (1100000000, 1199999999)
    assert set(origin.values()) == {"default"}


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(tmp_path, '[server]\nport = 9999\nhost = "10.0.0.1"\n[queue]\nmax = 10\npoll_interval_s = 0.5\n')
    monkeypatch.setenv("KRAN_QUEUE_MAX", "20")
    monkeypatch.setenv("KRAN_SERVER_HOST", "10.0.0.2")
    s, origin = load_settings(cfg, {"server.host": "0.0.0.0", "server.port": None})
    assert (s.server.host, origin["server.host"]) == ("0.0.0.0", "flag")
    assert (s.server.port, origin["server.port"]) == (9999, f"file {cfg}")
    assert (s.queue.max, origin["queue.max"]) == (20, "env KRAN_QUEUE_MAX")
    assert (s.queue.poll_interval_s, origin["queue.poll_interval_s"]) == (0.5, f"file {cfg}")
    assert (s.queue.dispatch_window, origin["queue.dispatch_window"]) == (1000, "default")


def test_config_file_from_kran_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAN_CONFIG", _toml(tmp_path, '[files]\nretention = "0"\n'))
    s, _ = load_settings()
    assert s.files.retention_s is None


def test_environment_values_are_parsed_by_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAN_LOCAL_ALLOW_HOST_PROCESSES", "off")
    monkeypatch.setenv("KRAN_CAPACITY_CPUS", "2.5")
    monkeypatch.setenv("KRAN_METRICS_PER_USER", "yes")
    monkeypatch.setenv("KRAN_SERVER_ENGINE_TYPO", "x")  # not a setting: not read, like KRAN_URL
    s, _ = load_settings()
    assert s.local.allow_host_processes is False and s.capacity.cpus == 2.5 and s.metrics.per_user is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown setting server.prot"),
        ("[bogus]\nx = 1\n", "unknown setting bogus.x"),
        ("server = 1\n", "[server] must be a table"),
        ("[server\n", "is not valid TOML"),
        ("[server]\nport = true\n", "setting server.port (file"),
        ("[server]\nport = 1.5\n", "1.5 is not an integer"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[queue]\nmax = 0\n", "queue.max"),
        ('[cluster]\nplacement = "tight"\n', "'spread' or 'pack'"),
        ('[local]\njob_user = "0:0"\n', "must not be root"),
        ('[local]\njob_uids = "5-3"\n', "local.job_uids is FIRST-LAST"),
        ('[server]\ntls_cert = "c.pem"\n', "give both --tls-cert and --tls-key"),
        ('[auth]\nproxy_secret = "s"\n', "proxy auth needs both"),
        ('[files]\nmin_free = "lots"\n', "files.min_free"),
        ('[files]\nretention = "soon"\n', "files.retention"),
        ('[image]\nextra_classes = "huge"\n', "image classes"),
        ('[cluster]\nnode_docker_hosts = "n1"\n', "expected HOSTNAME=URL"),
        ("[workflow]\nmax_parallel_steps = 5000\n", "workflow.max_parallel_steps"),
        ("[queue]\npoll_interval_s = 0\n", "queue.poll_interval_s"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        load_settings(_toml(tmp_path, text))
    assert message in str(e.value)
    assert "Traceback" not in str(e.value) and "pydantic" not in str(e.value)


def test_a_bad_environment_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAN_SERVER_PORT", "ninety")
    with pytest.raises(InvalidInput, match=r"setting server.port \(env KRAN_SERVER_PORT\)"):
        load_settings()


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"))


def test_describe_redacts_secrets_and_documents_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAN_AUTH_PROXY_SECRET", "hunter2")
    monkeypatch.setenv("KRAN_AUTH_PROXY_USER_HEADER", "X-User")
    s, origin = load_settings()
    rows = {r["key"]: r for r in describe(s, origin)}
    assert list(rows) == keys() and len(rows) == sum(len(c.model_fields) for c in SECTIONS.values())
    assert rows["auth.proxy_secret"]["value"] == "***" and rows["auth.proxy_user_header"]["value"] == "X-User"
    assert all(r["help"] for r in rows.values())
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [k for k in keys() if k not in doc or env_name(k) not in doc]
    assert missing == []


def test_each_section_is_its_own_type() -> None:
    s, _ = load_settings()
    assert {name: type(getattr(s, name)).__name__ for name in SECTIONS} == {
        name: cls.__name__ for name, cls in SECTIONS.items()
    }
    with pytest.raises(ValidationError):  # frozen: a part of the server cannot change another's settings
        s.queue.max = 1  # type: ignore[misc]
