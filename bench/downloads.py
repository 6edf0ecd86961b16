"""File downloads through kran's files API vs. reading the same files directly, in one run.

    .venv/bin/python bench/downloads.py [--n-small 200] [--n-mid 200] [--n-big 20] [--n-archive 20]
                                        [--warmup 2] [--json FILE]

Starts a `kran serve` (fresh temp data dir and HOME, free port on 127.0.0.1, default
settings), submits one host-process job that writes small.bin (4 KiB), mid.bin (1 MiB),
big.bin (64 MiB) and many/ (200 files of 1 KiB) into its working dir, waits until it
succeeded, then times, one request after the other on one keep-alive httpx client (admin
bearer key):
- GET /api/v1/jobs/{id}/files/{path} for each file, body read whole;
- GET /api/v1/jobs/{id}/archive (the whole working dir as a tar), body read whole;
and as the baseline, in the same process, the same number of times:
- open(file).read() of the same file in the job's working dir;
- the stdlib tarfile writing the same working dir to a sink that drops the bytes.
Prints median and p90 ms per download and the ratio of the medians (kran / direct) as a
markdown table; --json FILE writes the same figures. The server is stopped (by its pid)
and its temp dirs removed at the end.

Which source tree: the one `kran` is imported from here (PYTHONPATH=TREE/src to pick one);
the server runs `python -m kran.cli.main serve` with the same interpreter and environment,
and the test helpers (tests/conftest.py ServerProc) come from that same tree.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import kran

# The tree kran comes from (TREE/src/kran/__init__.py -> TREE), so the server, this process
# and the ServerProc helper all use one checkout; else the tree this file lives in.
_KRAN_TREE = Path(kran.__file__).resolve().parents[2]
_TREE = _KRAN_TREE if (_KRAN_TREE / "tests" / "conftest.py").is_file() else Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TREE))

from tests.conftest import ServerProc, free_port  # noqa: E402

FILES = {"small.bin": 4 << 10, "mid.bin": 1 << 20, "big.bin": 64 << 20}
MANY, MANY_BYTES = 200, 1 << 10

JOB_SH = (
    "set -e; "
    + " ".join(f"head -c {size} /dev/urandom > {name};" for name, size in FILES.items())
    + f" mkdir many; i=0; while [ $i -lt {MANY} ]; do head -c {MANY_BYTES} /dev/urandom > many/f$i; i=$((i+1)); done"
)


class NullSink(io.RawIOBase):
    """A file object that drops what is written (counts it)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(memoryview(b))
        self.n += n
        return n


def start_server() -> tuple[ServerProc, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="kran-bench-downloads-"))
    data, home = tmp / "data", tmp / "home"
    data.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAN_")}  # default settings
    env["HOME"] = str(home)
    s = ServerProc(data, free_port(), env)
    s.start()
    return s, tmp


def server_source(s: ServerProc) -> dict[str, Any]:
    """Where the running server's kran comes from: its argv and environment (from /proc),
    and what the same interpreter with that environment and cwd imports."""
    assert s.proc is not None
    pid = s.proc.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    environ = dict(
        kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in kv
    )
    cwd = os.readlink(f"/proc/{pid}/cwd")
    exe = os.readlink(f"/proc/{pid}/exe")
    imported = subprocess.run(
        [argv[0].decode(), "-c", "import kran.cli.main as m; print(m.__file__)"],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "pid": pid,
        "argv": [a.decode() for a in argv],
        "exe": exe,
        "cwd": cwd,
        "PYTHONPATH": environ.get("PYTHONPATH"),
        "kran.cli.main (same python, env, cwd)": imported,
    }


def timed(fn: Callable[[], int], n: int, warmup: int, expect: int) -> list[float]:
    """ms per call of fn, n calls after `warmup` untimed ones; fn returns the byte count."""
    for _ in range(warmup):
        got = fn()
        if got != expect:
            raise SystemExit(f"got {got} bytes, expected {expect}")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        got = fn()
        out.append((time.perf_counter() - t) * 1000)
        if got != expect:
            raise SystemExit(f"got {got} bytes, expected {expect}")
    return out


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


def fmt_size(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-small", type=int, default=200)
    ap.add_argument("--n-mid", type=int, default=200)
    ap.add_argument("--n-big", type=int, default=20)
    ap.add_argument("--n-archive", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="untimed downloads before each series")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    counts = {"small.bin": args.n_small, "mid.bin": args.n_mid, "big.bin": args.n_big}

    s, tmp = start_server()
    try:
        source = server_source(s)
        print(f"kran here: {kran.__file__}; test helpers from {_TREE}")
        print(f"server: {json.dumps(source)}", flush=True)
        creds = s.credentials
        headers = {"Authorization": f"Bearer {creds['key_id']}.{creds['secret']}"}
        with httpx.Client(base_url=s.url, timeout=120, headers=headers) as c:
            r = c.post("/api/v1/jobs", json={"sh": JOB_SH, "name": "bench-downloads", "cpus": "1", "mem": "256"})
            r.raise_for_status()
            job_id = r.json()["id"]
            job = s.wait_state(job_id, {"succeeded", "failed", "killed", "lost", "timed_out"}, timeout=120)
            if job["state"] != "succeeded":
                raise SystemExit(f"job {job_id} ended {job['state']}: {s.log.read_text()[-2000:]}")
            work = s.data_dir / "jobs" / str(job_id) / str(job["attempt"]) / "work"  # docs/data-dir.md
            listed = {e["name"]: e for e in c.get(f"/api/v1/jobs/{job_id}/files").json()["entries"]}
            for name, size in FILES.items():
                assert listed[name]["size"] == size == (work / name).stat().st_size, (name, listed.get(name))
                body = c.get(f"/api/v1/jobs/{job_id}/files/{name}")
                body.raise_for_status()
                if hashlib.sha256(body.content).digest() != hashlib.sha256((work / name).read_bytes()).digest():
                    raise SystemExit(f"{name}: downloaded bytes differ from the file")
            assert len(list((work / "many").iterdir())) == MANY

            rows: list[dict[str, Any]] = []

            def row(what: str, size: int, n: int, kran_ms: list[float], direct_ms: list[float], base: str) -> None:
                km, dm = statistics.median(kran_ms), statistics.median(direct_ms)
                rows.append(
                    {
                        "what": what,
                        "bytes": size,
                        "n": n,
                        "kran_median_ms": km,
                        "kran_p90_ms": p90(kran_ms),
                        "kran_mib_s": size / (1 << 20) / (km / 1000),
                        "direct": base,
                        "direct_median_ms": dm,
                        "direct_p90_ms": p90(direct_ms),
                        "ratio_median": km / dm,
                        "kran_ms": kran_ms,
                        "direct_ms": direct_ms,
                    }
                )

            for name, size in FILES.items():
                n, path = counts[name], work / name
                url = f"/api/v1/jobs/{job_id}/files/{name}"

                def download(url: str = url) -> int:
                    r = c.get(url)
                    r.raise_for_status()
                    return len(r.content)

                def read(path: Path = path) -> int:
                    with open(path, "rb") as f:
                        return len(f.read())

                kran_ms = timed(download, n, args.warmup, size)
                row(f"GET files/{name}", size, n, kran_ms, timed(read, n, args.warmup, size), "open().read()")

            def archive() -> int:
                r = c.get(f"/api/v1/jobs/{job_id}/archive")
                r.raise_for_status()
                return len(r.content)

            def direct_tar() -> int:
                sink = NullSink()
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as t:
                    for p in sorted(work.iterdir()):
                        t.add(p, arcname=p.name)
                return sink.n

            # sizes differ slightly (padding, headers); each series checks its own length
            tar_kran, tar_direct = archive(), direct_tar()
            kran_ms = timed(archive, args.n_archive, args.warmup, tar_kran)
            direct_ms = timed(direct_tar, args.n_archive, args.warmup, tar_direct)
            base = f"tarfile to a null sink ({fmt_size(tar_direct)})"
            row("GET archive (whole dir)", tar_kran, args.n_archive, kran_ms, direct_ms, base)

        print(f"\nkran {_TREE} (server pid {source['pid']}), job {job_id}, {os.cpu_count()} cpus\n")
        cols = ["download", "size", "n", "kran median ms", "kran p90 ms", "kran MiB/s"]
        cols += ["direct median ms", "direct p90 ms", "ratio (medians)"]
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for x in rows:
            cells = [x["what"], fmt_size(x["bytes"]), str(x["n"]), f"{x['kran_median_ms']:.2f}"]
            cells += [f"{x['kran_p90_ms']:.2f}", f"{x['kran_mib_s']:.0f}", f"{x['direct_median_ms']:.3f}"]
            cells += [f"{x['direct_p90_ms']:.3f}", f"{x['ratio_median']:.1f}"]
            print("| " + " | ".join(cells) + " |")
        print(f"\ndirect = the same file read with open().read() in this process; archive: {rows[-1]['direct']}")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"tree": str(_TREE), "kran": kran.__file__, "server": source, "cpus": os.cpu_count(), "rows": rows},
                    indent=1,
                )
            )
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
