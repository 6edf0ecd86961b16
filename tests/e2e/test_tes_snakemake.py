"""Real Snakemake on kran through its TES executor (snakemake-executor-plugin-tes), as its own
CI runs it against Funnel: no shared file system, the files in S3 (here moto's S3 server on
this machine's docker bridge), each job run by `snakemake` inside the task's container.

The Snakemake side is installed from PyPI into a venv of Debian's python3 (cached in
$KRAN_TEST_CACHE, default /var/cache/kran-test) and copied into an image at the same path
(`kran-test/snakemake`, on top of the CWL stand-in debian:stable-slim), with the S3 storage
plugin's wheels for the `pip install` the plugin's job script runs (no index: the task needs
no internet). The tasks reach S3, so the server runs with tes.network on (the default is
off: docs/tes.md). The plugin pins py-tes 0.4, which asks for `<url>/v1/tasks`: it is given
the URL `.../ga4gh/tes`."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc

pytestmark = pytest.mark.timeout(900)

PINS = (
    "snakemake==9.27.1",
    "snakemake-executor-plugin-tes==0.1.3",
    "snakemake-storage-plugin-s3==0.3.6",
    "moto[server,s3]==5.2.6",
)
CACHE = Path(os.environ.get("KRAN_TEST_CACHE", "/var/cache/kran-test"))
VENV = CACHE / f"snakemake-{hashlib.sha256(' '.join(PINS).encode()).hexdigest()[:12]}"
IMAGE = f"kran-test/snakemake:{VENV.name}"
KEYS = {"AWS_ACCESS_KEY_ID": "kran", "AWS_SECRET_ACCESS_KEY": "kran-test"}  # moto takes any
BASE = "debian:stable-slim"  # scripts/cwl-images.sh builds it (Debian 12's python3, as this machine's)
SNAKEFILE = """
rule all:
    input: "result.txt"

rule count:
    input: "data.txt"
    output: "counted.txt"
    shell: "wc -l < {input} > {output}"

rule final:
    input: "counted.txt"
    output: "result.txt"
    shell: "echo lines: $(cat {input}) > {output}"
"""


def _run(*argv: str | Path, **kw: Any) -> None:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])


@pytest.fixture(scope="module")
def snakemake_image(docker_client: Any) -> str:
    """The venv (once per pin set) and the image carrying it at the same path."""
    if not (VENV / ".complete").exists():
        shutil.rmtree(VENV, ignore_errors=True)
        _run("/usr/bin/python3", "-m", "venv", VENV)
        _run(VENV / "bin/pip", "install", "-q", "--disable-pip-version-check", *PINS, timeout=600)
        _run(VENV / "bin/pip", "download", "-q", "-d", VENV / "wheels", PINS[2], timeout=600)
        (VENV / ".complete").touch()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
            _run("bash", Path(__file__).parents[2] / "scripts" / "cwl-images.sh", timeout=900)
        env = (
            f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_NO_INDEX=1 "
            f"PIP_FIND_LINKS={VENV}/wheels PIP_DISABLE_PIP_VERSION_CHECK=1 HOME=/tmp "
            # the job runs as a uid the image's passwd lacks: getpass.getuser() reads USER first
            "USER=snakemake LOGNAME=snakemake"
        )
        dockerfile = f"FROM {BASE}\nCOPY . {VENV}\nENV {env}\n"
        _run("docker", "build", "-q", "-t", IMAGE, "-f", "-", VENV, input=dockerfile, timeout=600)
    return IMAGE


def _bridge_ip() -> str:
    """This machine's address on Docker's default bridge (where a task's container finds it)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True).stdout
    return out.split()[3].split("/")[0]


@pytest.fixture
def s3(snakemake_image: str) -> Iterator[str]:
    """moto's S3 server on the bridge, with a bucket holding the workflow's input."""
    host = _bridge_ip()
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [VENV / "bin/moto_server", "-H", host, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://{host}:{port}"
    keyed = {**os.environ, **KEYS}
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            _boto(url, "s3.create_bucket(Bucket='kranbucket')"), capture_output=True, env=keyed
        ).returncode:
            assert time.monotonic() < deadline, "moto_server did not answer"
            time.sleep(0.3)
        _run(*_boto(url, "s3.put_object(Bucket='kranbucket', Key='run/data.txt', Body=b'a\\nb\\nc\\n')"), env=keyed)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _boto(url: str, statement: str) -> list[str]:
    """A boto3 statement run by the venv's Python (what Snakemake's S3 plugin uses too)."""
    code = f"import boto3, sys; s3 = boto3.client('s3', endpoint_url='{url}', region_name='us-east-1'); {statement}"
    return [str(VENV / "bin/python"), "-c", code]


def test_a_snakemake_workflow_runs_on_kran_through_tes(
    make_server: Any, s3: str, snakemake_image: str, tmp_path: Path
) -> None:
    server: ServerProc = make_server(KRAN_TES_NETWORK="true")
    work = tmp_path / "workflow"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "funnel.log").touch()  # the plugin prints $GITHUB_WORKSPACE/funnel.log on a task's error
    creds = server.credentials
    env = {**os.environ, **KEYS, "GITHUB_WORKSPACE": str(tmp_path), "HOME": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run(
        [
            VENV / "bin/snakemake", "--executor", "tes", "--jobs", "2",
            "--tes-url", f"{server.url}/ga4gh/tes",
            f"--tes-user={creds['key_id']}", f"--tes-password={creds['secret']}",  # HTTP basic, on loopback
            "--default-storage-provider", "s3", "--default-storage-prefix", "s3://kranbucket/run",
            "--storage-s3-endpoint-url", s3, "--storage-s3-access-key", KEYS["AWS_ACCESS_KEY_ID"],
            "--storage-s3-secret-key", KEYS["AWS_SECRET_ACCESS_KEY"],
            "--container-image", snakemake_image,
        ],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = subprocess.run(
        _boto(s3, "sys.stdout.write(s3.get_object(Bucket='kranbucket', Key='run/result.txt')['Body'].read().decode())"),
        capture_output=True, text=True, env={**os.environ, **KEYS},
    )  # fmt: skip
    assert result.stdout == "lines: 3\n", result.stderr[-2000:]
    with server.api() as c:
        tasks = c.get("/ga4gh/tes/v1/tasks", params={"view": "BASIC"}).json()["tasks"]
    assert sorted(t["name"].split(".")[1] for t in tasks) == ["count", "final"]
    assert all(t["state"] == "COMPLETE" for t in tasks) and time.monotonic() - started < 600
