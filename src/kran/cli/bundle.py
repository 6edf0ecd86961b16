"""What a workflow submission sends: documents and inputs on a root the server shares go by
path; everything else is uploaded (the workflow packed into one document by cwltool)."""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kran.cli.client import ClientError


@dataclass
class Bundle:
    run: dict[str, Any]
    uploads: list[tuple[str, Path]] = field(default_factory=list)  # (path in the bundle, local file)
    temporary: list[Path] = field(default_factory=list)  # removed once posted


def _under(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real.is_relative_to(r) for r in roots)


def pack(workflow: Path) -> str:
    """The workflow and everything it references as one JSON document (cwltool --pack)."""
    import cwltool.main

    out, err = io.StringIO(), io.StringIO()
    code = cwltool.main.main(["--pack", str(workflow)], stdout=out, stderr=err)
    if code != 0:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        raise ClientError(f"{workflow} is not a valid CWL document: {lines[-1] if lines else 'cwltool --pack failed'}")
    return out.getvalue()


def _local_path(value: str, base: Path) -> Path | None:
    if value.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(value).path))
    if "://" in value or value.startswith("_:"):
        return None
    return (base / value) if not os.path.isabs(value) else Path(value)


def _rewrite_inputs(obj: Any, base: Path, roots: list[Path], bundle: Bundle) -> Any:
    if isinstance(obj, list):
        return [_rewrite_inputs(v, base, roots, bundle) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _rewrite_inputs(v, base, roots, bundle) for k, v in obj.items()}
    if out.get("class") not in ("File", "Directory"):
        return out
    ref = out.get("location") or out.get("path")
    if not isinstance(ref, str):
        return out  # a literal (contents / listing only)
    local = _local_path(ref, base)
    if local is None:
        return out
    out.pop("path", None)
    if _under(local, roots):
        out["location"] = str(local.resolve())
        return out
    if not local.exists():
        raise ClientError(f"input {ref} not found ({local})")
    n = len(bundle.uploads)
    dest = f"inputs/{n}/{local.name}"
    if local.is_dir():
        for dirpath, _, names in os.walk(local):
            for name in sorted(names):
                f = Path(dirpath) / name
                bundle.uploads.append((f"{dest}/{f.relative_to(local).as_posix()}", f))
        if not any(True for _ in local.iterdir()):
            raise ClientError(f"input directory {local} is empty: kran uploads files only")
    else:
        bundle.uploads.append((dest, local))
    out["location"] = dest
    return out


def make_bundle(
    workflow: str, job_order: str | None, roots: list[Path], name: str | None, labels: dict[str, str]
) -> Bundle:
    from ruamel.yaml import YAML

    wf = Path(workflow.removeprefix("file://").split("#", 1)[0])
    fragment = "#" + workflow.split("#", 1)[1] if "#" in workflow else ""
    if not wf.is_file():
        raise ClientError(f"workflow {workflow} not found")
    run: dict[str, Any] = {"name": name or wf.name, "labels": labels}
    bundle = Bundle(run)
    if _under(wf, roots):
        run["workflow"] = str(wf.resolve()) + fragment
    else:
        packed = Path(os.environ.get("TMPDIR", "/tmp")) / f"kran-packed-{os.getpid()}.cwl"
        packed.write_text(pack(wf))
        bundle.uploads.append(("workflow.cwl", packed))
        bundle.temporary.append(packed)
        run["workflow"] = "workflow.cwl" + (fragment if fragment else "")
    if job_order:
        jp = Path(job_order)
        if not jp.is_file():
            raise ClientError(f"job order {job_order} not found")
        if _under(jp, roots):
            run["job_order"] = str(jp.resolve())
        else:
            try:
                data = YAML(typ="safe", pure=True).load(jp.read_text()) or {}
            except Exception as e:
                raise ClientError(f"{job_order}: not YAML or JSON: {e}") from None
            if not isinstance(data, dict):
                raise ClientError(f"{job_order}: the job order must be a mapping of input names to values")
            run["inputs"] = _rewrite_inputs(data, jp.resolve().parent, roots, bundle)
    return bundle


def post_bundle(client: Any, bundle: Bundle) -> dict[str, Any]:
    if not bundle.uploads:
        return dict(client.post("/api/v1/workflows", json=bundle.run))
    files = [("file", (dest, open(src, "rb"))) for dest, src in bundle.uploads]
    try:
        return dict(client.post("/api/v1/workflows", data={"run": json.dumps(bundle.run)}, files=files, timeout=None))
    finally:
        for _, (_, f) in files:
            f.close()
        for p in bundle.temporary:
            p.unlink(missing_ok=True)
