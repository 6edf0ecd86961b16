import pytest

from kran.domain.jobs import JobSpec, SpecError, job_environment, validate_spec
from kran.domain.resources import Resources
from tests.domain.test_resources import request


def spec(**kw):  # type: ignore[no-untyped-def]
    args = dict(
        command=["echo", "hi"],
        sh=None,
        request=request(),
        image=None,
        name=None,
        env={},
        labels={},
        priority=0,
        retries=0,
        timeout_s=None,
        network=False,
    )
    args.update(kw)
    return validate_spec(**args)


def test_shell_string_becomes_sh_c() -> None:
    s = spec(command=None, sh="a | b")
    assert s.command == ("/bin/sh", "-c", "a | b") and s.shell


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"command": None}, "command"),
        ({"sh": "x"}, "command"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"BIG": "x" * 70_000}}, "env"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"priority": 5000}, "priority"),
        ({"retries": -1}, "retries"),
        ({"image": "has space"}, "image"),
        ({"command": ["a\0b"]}, "command"),
    ],
)
def test_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as e:
        spec(**kw)
    assert e.value.field == field


def test_json_round_trip() -> None:
    s = spec(env={"A": "1"}, labels={"team": "x"}, timeout_s=30.0, image="img:1")
    assert JobSpec.from_json(s.to_json()) == s


def test_environment_expands_kran_references_only() -> None:
    s = spec(env={"THREADS": "$KRAN_CPUS", "MEM": "${KRAN_MEM_MB}m", "OTHER": "$HOME/x", "U": "$KRAN_UNKNOWN"})
    env = job_environment(s, job_id=7, attempt=2, alloc=Resources(2500, 1024, 0, 0), workdir="/w")
    assert env["THREADS"] == "2.5" and env["MEM"] == "1024m" and env["OTHER"] == "$HOME/x"
    assert env["U"] == "$KRAN_UNKNOWN"
    assert (env["KRAN_JOB_ID"], env["KRAN_ATTEMPT"], env["KRAN_WORKDIR"]) == ("7", "2", "/w")
