"""What a workflow submission sends. Documents and inputs on a root the server shares go by
path; everything else is uploaded, once each: the workflow's documents (`run:`, `$import`,
`$include`) and the local files they name (input defaults, InitialWorkDirRequirement
listings, `$schemas` format ontologies), as cwltool lists them; the job order's files and
directories, and the secondary files the documents' patterns find beside them.
The documents keep their layout under `doc/` (no rewriting: they name each other and
their files relative to themselves); the job order's files go to `files/N/` and its
locations are rewritten to those places."""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kran.cli.client import ClientError

PROGRESS_FROM = 16 << 20  # uploads this big show a progress bar


@dataclass
class Bundle:
    run: dict[str, Any]
    uploads: list[tuple[str, Path]] = field(default_factory=list)  # (path in the bundle, local file)
    temporary: list[Path] = field(default_factory=list)  # removed once posted
    shipped: dict[Path, str] = field(default_factory=dict)  # a local file or dir (resolved) -> its place
    patterns: list[str] = field(default_factory=list)  # secondaryFiles patterns of the documents

    @property
    def size(self) -> int:
        return sum(src.stat().st_size for _, src in self.uploads)


def _under(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real.is_relative_to(r) for r in roots)


def dependencies(workflow: str) -> list[Path]:
    """The workflow's documents and the local files they name (`run:` documents, `$import`
    and `$include` targets, defaults, staged files, `$schemas`), as cwltool finds them
    (`--print-deps`), the workflow first."""
    import cwltool.main

    out, err = io.StringIO(), io.StringIO()
    code = cwltool.main.main(["--print-deps", "--relative-deps", "cwd", workflow], stdout=out, stderr=err)
    if code != 0:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        raise ClientError(f"{workflow} is not a valid CWL document: {lines[-1] if lines else 'cwltool failed'}")
    found: list[Path] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            ref = obj.get("location")
            if isinstance(ref, str) and (local := _local_path(ref.split("#", 1)[0], Path.cwd())) is not None:
                if local.resolve() not in found:
                    found.append(local.resolve())
            for v in obj.get("secondaryFiles") or []:
                walk(v)

    walk(json.loads(out.getvalue()))
    return found


def _local_path(value: str, base: Path, uri: bool = True) -> Path | None:
    """The local file a reference names, or None (a URL, a literal, an expression). A
    `location` is a URI, relative ones included (`item%231.txt` is `item#1.txt`); a
    `path` is a path."""
    if value.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(value).path))
    if "://" in value or value.startswith("_:") or "$(" in value or "${" in value:
        return None
    if uri:
        value = urllib.parse.unquote(value)
    return (base / value) if not os.path.isabs(value) else Path(value)


def _ship(local: Path, bundle: Bundle, what: str, dest: str | None = None) -> str:
    """Upload a local file or directory (once, however often it is named); its place."""
    real = local.resolve()
    if real in bundle.shipped:
        return bundle.shipped[real]
    if not local.exists():
        raise ClientError(f"{what} {local} not found")
    dest = dest or f"files/{len(bundle.shipped)}/{local.name}"
    if local.is_dir():
        files = [Path(d) / n for d, _, names in os.walk(local) for n in sorted(names)]
        if not files:
            raise ClientError(f"{what} {local} is an empty directory: kran uploads files only")
        bundle.uploads += [(f"{dest}/{f.relative_to(local).as_posix()}", f) for f in files]
    else:
        bundle.uploads.append((dest, local))
        for extra in secondary_files(local, bundle.patterns):  # beside it, where the tool looks
            if extra.resolve() not in bundle.shipped:
                bundle.uploads.append((f"{dest.rsplit('/', 1)[0]}/{extra.name}", extra))
                bundle.shipped[extra.resolve()] = f"{dest.rsplit('/', 1)[0]}/{extra.name}"
    bundle.shipped[real] = dest
    return dest


def secondary_files(local: Path, patterns: list[str]) -> list[Path]:
    """The files beside `local` that secondaryFiles patterns name (`.bai`, `^.bai`; not
    expressions, which only the server can evaluate)."""
    out = []
    for pattern in patterns:
        if "$(" in pattern or "${" in pattern:
            continue
        name = local.name
        while pattern.startswith("^"):
            pattern = pattern[1:]
            name = name.rsplit(".", 1)[0] if "." in name else name
        candidate = local.with_name(name + pattern)
        if candidate != local and candidate.is_file():
            out.append(candidate)
    return out


def _rewrite(obj: Any, base: Path, roots: list[Path], bundle: Bundle, what: str) -> Any:
    """Every local File/Directory location in `obj` (a job order): kept when on a shared
    root, else shipped and replaced by its place in the bundle."""
    if isinstance(obj, list):
        return [_rewrite(v, base, roots, bundle, what) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _rewrite(v, base, roots, bundle, what) for k, v in obj.items()}
    if out.get("class") not in ("File", "Directory"):
        return out
    ref = out.get("location") or out.get("path")
    if not isinstance(ref, str):
        return out  # a literal (contents / listing only)
    new = _relocated(ref, base, roots, bundle, what, uri="location" in out)
    if new != ref:
        out.pop("path", None)
        out["location"] = new
    return out


def _relocated(ref: str, base: Path, roots: list[Path], bundle: Bundle, what: str, uri: bool = True) -> str:
    local = _local_path(ref, base, uri)
    if local is None:
        return ref  # a URL or a literal: the server fetches or makes it
    if _under(local, roots):
        return "file://" + urllib.parse.quote(str(local.resolve()))
    return urllib.parse.quote(_ship(local, bundle, what))  # a location is a URI


def _load(path: Path) -> Any:
    """A document as data, for its secondaryFiles patterns (None when it is not YAML)."""
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except Exception:
        return None


def _included(obj: Any, base: Path) -> list[Path]:
    """The local files a document's `$include` and `$import` directives name."""
    out: list[Path] = []
    if isinstance(obj, list):
        for v in obj:
            out += _included(v, base)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("$include", "$import") and isinstance(v, str):
                local = _local_path(v.split("#", 1)[0], base)
                if local is not None and local.is_file():
                    out.append(local.resolve())
            else:
                out += _included(v, base)
    return out


def _patterns(obj: Any, out: list[str]) -> list[str]:
    """Every secondaryFiles pattern in a (packed) document."""
    if isinstance(obj, list):
        for v in obj:
            _patterns(v, out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k == "secondaryFiles":
                for p in v if isinstance(v, list) else [v]:
                    p = p.get("pattern") if isinstance(p, dict) else p
                    if isinstance(p, str) and p not in out:
                        out.append(p)
            else:
                _patterns(v, out)
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
    else:  # the documents as they are, in their layout (no packing: it reformats numbers)
        deps = dependencies(str(wf) + fragment)
        for doc in deps:  # cwltool does not list $include targets (JavaScript libraries, texts)
            if doc.suffix in (".cwl", ".yml", ".yaml", ".json") and doc.is_file():
                deps += [p for p in _included(_load(doc), doc.parent) if p not in deps]
        base = Path(os.path.commonpath([str(p.parent if p.is_file() else p) for p in deps]))
        for p in deps:
            if p.suffix in (".cwl", ".yml", ".yaml", ".json") and p.is_file():
                bundle.patterns += [x for x in _patterns(_load(p), []) if x not in bundle.patterns]
        for p in deps:  # all of them, on a root or not: the documents name them relative to each other
            _ship(p, bundle, "file named by the workflow", f"doc/{p.relative_to(base).as_posix()}")
        run["workflow"] = f"doc/{wf.resolve().relative_to(base).as_posix()}{fragment}"
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
            run["inputs"] = _rewrite(data, jp.resolve().parent, roots, bundle, "input")
    return bundle


class _Counted(io.RawIOBase):
    """A file read for the upload, counting what is read (and starting again when the
    client reads it again from the start: its signature hashes the body first)."""

    def __init__(self, f: BinaryIO, changed: Callable[[], None]) -> None:
        self.f, self.changed, self.count = f, changed, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.count += len(data)
        self.changed()
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self.f.seek(offset, whence)
        self.count = pos
        return pos

    def tell(self) -> int:
        return self.f.tell()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


def post_bundle(client: Any, bundle: Bundle, max_upload_mb: int | None = None) -> dict[str, Any]:
    """Post the run; its files go in one streamed multipart body, refused here first when
    they are more than the server takes."""
    if not bundle.uploads:
        return dict(client.post("/api/v1/workflows", json=bundle.run))
    total = bundle.size
    if max_upload_mb is not None and total > max_upload_mb << 20:
        for p in bundle.temporary:
            p.unlink(missing_ok=True)
        raise ClientError(
            f"the workflow's files to upload total {total / (1 << 20):.1f} MiB, more than the server takes "
            f"(server.max_upload_mb = {max_upload_mb}); put them on a root the server shares (files.file_url_roots)"
        )
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True)
    task = progress.add_task("uploading", total=total)
    readers: list[_Counted] = []

    def changed() -> None:
        progress.update(task, completed=sum(r.count for r in readers))

    readers += [_Counted(open(src, "rb"), changed) for _, src in bundle.uploads]
    files = [("file", (dest, r)) for (dest, _), r in zip(bundle.uploads, readers, strict=True)]
    try:
        if total >= PROGRESS_FROM:
            progress.start()
        return dict(client.post("/api/v1/workflows", data={"run": json.dumps(bundle.run)}, files=files, timeout=None))
    finally:
        progress.stop()
        for _, (_, f) in files:
            f.close()
        for p in bundle.temporary:
            p.unlink(missing_ok=True)
