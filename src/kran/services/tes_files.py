"""A TES task's files on the server: where its inputs may come from, how they are staged
into its fresh tree, and how a file:// output is written as the task's user. The server runs
as root here, so nothing follows a link a user could have planted (services/tes.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kran import jobfs
from kran.domain import tes
from kran.domain.datafiles import parse_source
from kran.errors import FetchError, InvalidInput
from kran.ports import Fetcher

OUTPUT_TIMEOUT_S = 3600  # one output file's copy


class OutputError(Exception):
    pass


def source_url(inp: tes.Input, field: str) -> str:
    """An input's URL as kran fetches it: http(s)://, or file:// (a bare absolute path is one)."""
    url = inp.url or ""
    if url.startswith("/"):
        url = "file://" + url
    if inp.directory and not url.startswith("file:"):
        raise InvalidInput("a DIRECTORY input is read from a file:// URL only", field)
    try:
        parse_source(url) if not inp.directory else None
    except ValueError as e:
        raise InvalidInput(str(e), field) from None
    return url


def file_url_path(url: str, roots: Sequence[Path]) -> tuple[Path, str]:
    """Where a file:// URL reads (as the fetcher reads them: percent-escapes decoded, the
    host empty or localhost): the root it resolves under and the path below it (opened
    beneath that root, `jobfs.open_beneath`); FetchError unless under one of `roots`."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise FetchError(f"{url}: not a file:// URL of this machine")
    found = jobfs.under_root(unquote(parts.path), roots)
    if found is None:
        raise FetchError(f"{url}: file:// URLs may only read under the roots the admin allowed (files.file_url_roots)")
    return found


def copy_tree(src: tuple[Path, str], dest: Path) -> None:
    """A directory's regular files and dirs, read through the safe walk (links, FIFOs and
    devices left out: a link could point anywhere on the server); the directory itself
    reached beneath its root (a link swapped in after the check is not followed out)."""
    dest.mkdir(exist_ok=True)
    with jobfs.Tree.beneath(*src) as tree:
        for item in tree.walk():
            target = dest / item.rel
            if item.kind == "dir":
                target.mkdir()
            elif item.kind == "file":
                f = tree.open_at(item.dir_fd, item.name, item.rel)
                try:
                    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                    try:
                        while chunk := os.read(f.fd, 1 << 20):
                            os.write(out, chunk)
                    finally:
                        os.close(out)
                finally:
                    os.close(f.fd)


def stage_input(fs: Path, inp: tes.Input, field: str, fetcher: Fetcher, file_roots: Sequence[Path]) -> None:
    """One input at its path in the fresh tree (the checks keep inputs apart: none is
    inside another's DIRECTORY, so nothing written here passes a link)."""
    dest = fs / inp.path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inp.content is not None:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(inp.content)
    elif inp.directory:
        copy_tree(file_url_path(source_url(inp, field), file_roots), dest)
    else:
        fetcher.fetch_to(parse_source(source_url(inp, field)), dest)


def write_as_user(tree: jobfs.Tree, path: str, dest: str, user: tuple[int, int] | None) -> None:
    """A file of the task's tree (read through the safe walk) written at `dest` by a
    process of the task's user: what it may write there is what that user may. Holes
    stay holes (dd conv=sparse); the process gets no environment of the server's."""
    f = tree.open_file(path.lstrip("/"))
    try:
        switch: dict[str, Any] = {}
        if user is not None:
            switch = {"user": user[0], "group": user[1], "extra_groups": []}
        script = 'mkdir -p -- "$(dirname -- "$1")" && exec dd of="$1" bs=1M conv=sparse status=none'
        done = subprocess.run(
            ["/bin/sh", "-c", script, "sh", dest],
            stdin=f.fd,
            capture_output=True,
            timeout=OUTPUT_TIMEOUT_S,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            **switch,
        )
    finally:
        os.close(f.fd)
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise OutputError(f"writing {dest} as the task's user: {why or done.returncode}")
