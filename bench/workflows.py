"""CWL through kran vs. `cwltool --parallel` on the same machine, same images.

1. scatter: one workflow scattering a small containerized step over N inputs (default 200),
   then a gather step. Wall time from submit to the output object, both ways.
2. suite (--suite): the CWL v1.2 conformance suite's required tests (or --tags) with
   cwltest -j 4, through kran-cwl-runner and through cwltool itself.

    python bench/workflows.py [--steps 200] [--suite DIR] [--tags required]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dispatch import start_server  # noqa: E402

IMAGE = "debian:stable-slim"  # scripts/cwl-images.sh builds it
VENV_BIN = Path(sys.executable).parent

STEP = f"""
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{IMAGE}"}}}}
baseCommand: echo
inputs: {{n: {{type: int, inputBinding: {{position: 1}}}}}}
stdout: n.txt
outputs: {{out: {{type: stdout}}}}
"""
GATHER = f"""
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{IMAGE}"}}}}
baseCommand: cat
inputs: {{files: {{type: "File[]", inputBinding: {{position: 1}}}}}}
stdout: all.txt
outputs: {{out: {{type: stdout}}}}
"""
WORKFLOW = """
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs: {ns: "int[]"}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  step: {run: step.cwl, scatter: n, in: {n: ns}, out: [out]}
  gather: {run: gather.cwl, in: {files: step/out}, out: [out]}
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.monotonic() - t
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode})")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--suite", help="the conformance suite's dir: also time it")
    ap.add_argument("--tags", default="required")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kran-bench-wf-"))
    (work / "step.cwl").write_text(STEP)
    (work / "gather.cwl").write_text(GATHER)
    (work / "wf.cwl").write_text(WORKFLOW)
    (work / "job.yml").write_text(f"ns: [{', '.join(str(i) for i in range(args.steps))}]\n")
    roots = f"{work}:{Path(args.suite).resolve()}" if args.suite else str(work)
    cpus = os.cpu_count() or 2
    server = start_server(cpus, KRAN_FILES_FILE_URL_ROOTS=roots)
    try:
        creds = server.credentials
        env = {
            **os.environ,
            "KRAN_URL": server.url,
            "KRAN_KEY_ID": creds["key_id"],
            "KRAN_SECRET": creds["secret"],
            "KRAN_CLIENT_CONFIG": "/nonexistent",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        }
        out = work / "out"
        kran_s = timed(["kran-cwl-runner", "--quiet", "--outdir", str(out / "k"), "wf.cwl", "job.yml"], env, work)
        cwl_s = timed(
            ["cwltool", "--parallel", "--quiet", "--outdir", str(out / "c"), "--tmpdir-prefix", f"{work}/t/"]
            + ["wf.cwl", "job.yml"],
            env,
            work,
        )
        assert (out / "k" / "all.txt").read_text() == (out / "c" / "all.txt").read_text()
        print(f"scatter of {args.steps} steps + gather, {cpus} cpus:")
        print(f"  kran-cwl-runner {kran_s:.1f} s   cwltool --parallel {cwl_s:.1f} s   ratio {kran_s / cwl_s:.2f}")
        if args.suite:
            suite = Path(args.suite).resolve()
            base = ["cwltest", "--test", "conformance_tests.yaml", "-j", "4", "--tags", args.tags]
            k = timed([*base, "--tool", "kran-cwl-runner"], env, suite)
            c = timed([*base, "--tool", "cwltool", "--", "--parallel"], env, suite)
            print(f"conformance ({args.tags}), cwltest -j 4:")
            print(f"  kran-cwl-runner {k:.1f} s   cwltool --parallel {c:.1f} s   ratio {k / c:.2f}")
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work), str(server.data_dir)], check=False)


if __name__ == "__main__":
    main()
