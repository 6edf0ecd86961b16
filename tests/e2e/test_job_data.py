"""Job data: files fetched from a real HTTP server, the node cache, uploads, tar download,
retention."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FileServer, ServerProc

LOOPBACK = "127.0.0.1"  # the test's file server: a loopback address is refused unless named (test_fetch_hosts.py)


@pytest.fixture
def server(make_server: Any) -> ServerProc:
    s: ServerProc = make_server(KRAN_FILES_FETCH_HOSTS=LOOPBACK)
    return s


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _make_archives(root: Path) -> None:
    (root / "data.txt").write_text("plain data\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        body = b"from the tarball\n"
        info = tarfile.TarInfo("ref/genome.txt")
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    (root / "ref.tar.gz").write_bytes(buf.getvalue())
    with zipfile.ZipFile(root / "tools.zip", "w") as z:
        z.writestr("tools/run.sh", "echo from the zip\n")


def test_files_are_fetched_checked_and_extracted(kran: Any, server: ServerProc, file_server: FileServer) -> None:
    _make_archives(file_server.root)
    u = file_server.url
    r = kran(
        "run",
        "--fetch", f"{u}/data.txt#sha256={_sha(file_server.root / 'data.txt')}",
        "--fetch", f"{u}/ref.tar.gz",
        "--fetch", f"{u}/tools.zip",
        "--sh", "cat data.txt ref/genome.txt; sh tools/run.sh; ls",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "plain data\nfrom the tarball\nfrom the zip\n" in r.output
    assert "ref.tar.gz" not in r.output  # archives are extracted, not kept


def test_fetch_failures_name_the_url_and_reason(make_server: Any, file_server: FileServer) -> None:
    server = make_server(KRAN_FILES_FETCH_TIMEOUT_S="1", KRAN_FILES_FETCH_HOSTS=LOOPBACK)
    (file_server.root / "data.txt").write_text("plain data\n")
    u = file_server.url
    cases = {
        f"{u}/data.txt#sha256={'0' * 64}": "sha256 mismatch",
        f"{u}/missing.txt": "HTTP 404",
        f"{u}/slow/big.bin": "timed out",
        "file:///etc/passwd": "file:// URLs may only read under",
    }
    with server.api() as c:
        ids = {
            c.post("/api/v1/jobs", json={"command": ["true"], "files": [url]}).json()["id"]: (url, why)
            for url, why in cases.items()
        }
        ok = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
    for job_id, (url, why) in ids.items():
        job = server.wait_state(job_id, {"failed"})
        assert url.partition("#")[0] in job["reason"] and why in job["reason"], job["reason"]
    assert server.wait_state(ok, {"succeeded"})["state"] == "succeeded"  # others are unaffected
    with server.api() as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"], "files": ["ftp://example/x"]})
        assert r.status_code == 422 and "only http, https, file" in r.json()["error"]


def test_cached_files_are_fetched_once_and_evicted_lru(
    make_server: Any, file_server: FileServer, tmp_path: Path
) -> None:
    server = make_server(
        KRAN_FILES_CACHE_MAX_MB="1", KRAN_FILES_FILE_URL_ROOTS=str(tmp_path / "local"), KRAN_FILES_FETCH_HOSTS=LOOPBACK
    )
    for name in ("a.bin", "b.bin"):
        (file_server.root / name).write_bytes(os.urandom(700_000))
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "note.txt").write_text("local file\n")
    u = file_server.url
    with server.api() as c:

        def run(*urls: str, cmd: str = "ls -l") -> dict[str, Any]:
            job_id = c.post("/api/v1/jobs", json={"sh": cmd, "cached_files": list(urls)}).json()["id"]
            return server.wait_state(job_id, {"succeeded", "failed"})

        assert run(f"{u}/a.bin")["state"] == "succeeded"
        assert run(f"{u}/a.bin")["state"] == "succeeded"
        assert file_server.hits["/a.bin"] == 1  # the second job used the node cache
        assert run(f"{u}/b.bin")["state"] == "succeeded"  # 1.4 MB > 1 MiB: a.bin (least recent) goes
        blobs = list((server.data_dir / "cache" / "blobs").iterdir())
        assert [b.name for b in blobs] == [_sha(file_server.root / "b.bin")]
        assert run(f"{u}/a.bin")["state"] == "succeeded"
        assert file_server.hits["/a.bin"] == 2
        job = run(f"file://{tmp_path}/local/note.txt", cmd="cat note.txt")
        assert job["state"] == "succeeded"


def test_inputs_upload_and_download_all(kran: Any, server: ServerProc, tmp_path: Path) -> None:
    local = tmp_path / "in.txt"
    local.write_text("uploaded\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    r = kran(
        "submit", "--input", str(local), "--input", f"{big}:sub/dir/big.bin",
        "--sh", "mkdir out; cat in.txt > out/copy.txt; sha256sum sub/dir/big.bin > out/sum; ln -s /etc/passwd out/link",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    job_id = int(r.output)
    assert server.wait_state(job_id, {"succeeded"})["inputs"] is True
    dest = tmp_path / "got"
    r = kran("get", str(job_id), "--all", "-o", str(dest))
    assert r.exit_code == 0, r.output
    assert (dest / "out" / "copy.txt").read_text() == "uploaded\n"
    assert (dest / "sub" / "dir" / "big.bin").read_bytes() == big.read_bytes()
    assert (dest / "out" / "sum").read_text().split()[0] == _sha(big)
    assert not (dest / "out" / "link").exists()  # a link leaving the dir is not extracted

    # bad uploads: a destination leaving the working dir, no job field
    with server.api() as c:
        r = c.post(
            "/api/v1/jobs/upload", data={"job": json.dumps({"command": ["true"]})}, files=[("input", ("../x", b"1"))]
        )
        assert r.status_code == 422 and "inside" in r.json()["error"]
        r = c.post("/api/v1/jobs/upload", files=[("input", ("x", b"1"))])
        assert r.status_code == 422 and "job" in r.json()["error"]
        r = c.post("/api/v1/jobs/upload", data={"job": "{not json"}, files=[("input", ("x", b"1"))])
        assert r.status_code == 422
    assert len(list((server.data_dir / "uploads").iterdir())) == 1  # refused uploads leave nothing
    r = kran("get", str(job_id))
    assert r.exit_code != 0 and "PATH" in r.output


def test_upload_size_cap(make_server: Any, tmp_path: Path) -> None:
    server = make_server(KRAN_SERVER_MAX_UPLOAD_MB="1")
    with server.api() as c:
        r = c.post(
            "/api/v1/jobs/upload",
            data={"job": json.dumps({"command": ["true"]})},
            files=[("input", ("x", os.urandom(2 << 20)))],
        )
        assert r.status_code == 413
        assert c.get("/api/v1/jobs").json()["jobs"] == []


def test_retention_by_age_and_by_size(make_server: Any) -> None:
    server = make_server(KRAN_FILES_RETENTION="1s", KRAN_FILES_RETENTION_CHECK_S="0.2")
    with server.api() as c:
        job_id = c.post("/api/v1/jobs", json={"sh": "echo hi > out.txt"}).json()["id"]
        server.wait_state(job_id, {"succeeded"})
        deadline = time.time() + 15
        while not c.get(f"/api/v1/jobs/{job_id}").json()["files_expired"]:
            assert time.time() < deadline, "files did not expire"
            time.sleep(0.2)
        r = c.get(f"/api/v1/jobs/{job_id}/files")
        assert r.status_code == 410 and "retention" in r.json()["error"]
        assert c.get(f"/api/v1/jobs/{job_id}").json()["state"] == "succeeded"  # the record stays
        assert not (server.data_dir / "jobs" / str(job_id)).exists()

    sized = make_server(KRAN_FILES_RETENTION="0", KRAN_FILES_MAX_DATA_MB="1", KRAN_FILES_RETENTION_CHECK_S="0.2")
    with sized.api() as c:
        ids = []
        for _ in range(3):  # 400 KiB each: the newest two fit under 1 MiB
            ids.append(c.post("/api/v1/jobs", json={"sh": "head -c 409600 /dev/urandom > blob"}).json()["id"])
            sized.wait_state(ids[-1], {"succeeded"})
            time.sleep(0.05)
        deadline = time.time() + 15
        while not c.get(f"/api/v1/jobs/{ids[0]}").json()["files_expired"]:
            assert time.time() < deadline, "the oldest files did not go"
            time.sleep(0.2)
        time.sleep(0.5)
        assert [c.get(f"/api/v1/jobs/{i}").json()["files_expired"] for i in ids] == [True, False, False]
