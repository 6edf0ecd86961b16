import json
from dataclasses import replace

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


def test_json_text_is_the_json_of_to_json() -> None:
    """The stored text, written from the fields as they are, is what json.dumps(to_json())
    writes, for every kind of field (tuples, nested tuples, dicts, the request, None)."""
    s = replace(
        spec(
            env={"A": "1", "B": 'ü"\\n'},
            labels={"team": "x"},
            timeout_s=30.5,
            after=[3, 4],
            dependency="afterany:5,afterok:a7,singleton",
            name="n",
            files=["https://example.org/a.tar"],
            notify="https://example.org/hook",
            notify_on="start,end",
        ),
        binds=(("/h", "/c", True),),
        run_as=(1000, 1000),
        array=(7, 2, 10),
        image_size=12,
    )
    assert s.json_text() == json.dumps(s.to_json())
    assert JobSpec.from_json(json.loads(s.json_text())) == s
    assert spec().json_text() == json.dumps(spec().to_json())


def test_charged_to_is_replace_of_the_account() -> None:
    s = spec(labels={"team": "x"}, timeout_s=30.0)
    assert s.charged_to("acct") == replace(s, account="acct")
    assert s.account is None


def test_environment_expands_kran_references_only() -> None:
    s = spec(env={"THREADS": "$KRAN_CPUS", "MEM": "${KRAN_MEM_MB}m", "OTHER": "$HOME/x", "U": "$KRAN_UNKNOWN"})
    env = job_environment(s, job_id=7, attempt=2, alloc=Resources(2500, 1024, 0, 0), workdir="/w")
    assert env["THREADS"] == "2.5" and env["MEM"] == "1024m" and env["OTHER"] == "$HOME/x"
    assert env["U"] == "$KRAN_UNKNOWN"
    assert (env["KRAN_JOB_ID"], env["KRAN_ATTEMPT"], env["KRAN_WORKDIR"]) == ("7", "2", "/w")
