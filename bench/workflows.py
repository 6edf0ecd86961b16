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
from xml.etree import ElementTree

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


def timed(cmd: list[str], env: dict[str, str], cwd: Path, check: bool = True) -> float:
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.monotonic() - t
    if check and proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode})")
    return took


def passed(junit: Path) -> str:
    """'passed/total' from cwltest's JUnit XML (failures, errors and skips count as not passed)."""
    cases = list(ElementTree.parse(junit).getroot().iter("testcase"))
    bad = sum(1 for c in cases if any(c.find(t) is not None for t in ("failure", "error", "skipped")))
    return f"{len(cases) - bad}/{len(cases)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--suite", help="the conformance suite's dir: also time it")
    ap.add_argument("--tags", default="required", help="cwltest tags; 'all' for the whole suite")
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
        env = {**os.environ, **server.client_env(), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
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
            base = ["cwltest", "--test", "conformance_tests.yaml", "-j", "4"]
            base += [] if args.tags == "all" else ["--tags", args.tags]
            runs = {
                "kran-cwl-runner": ["--tool", "kran-cwl-runner"],
                "cwltool --parallel": ["--tool", "cwltool", "--", "--parallel"],
            }
            took = {}
            print(f"conformance ({args.tags}), cwltest -j 4:")
            for name, tool in runs.items():
                junit = work / f"{name.split()[0]}.xml"
                took[name] = timed([*base, "--junit-xml", str(junit), *tool], env, suite, check=False)
                print(f"  {name}: {took[name]:.1f} s, {passed(junit)} passed")
            print(f"  ratio {took['kran-cwl-runner'] / took['cwltool --parallel']:.2f}")
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work), str(server.data_dir)], check=False)


if __name__ == "__main__":
    main()
