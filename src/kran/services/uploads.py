"""Files uploaded with a job (`kran submit --input LOCAL[:DEST]`).

They are kept under `uploads/<id>/` and copied into the working dir of every attempt,
so a retry starts from the same inputs.
"""

from __future__ import annotations

import errno
import shutil
import uuid
from collections.abc import Sequence
from typing import BinaryIO

from kran.errors import InvalidInput, StorageFull
from kran.jobfs_removal import remove_tree
from kran.services.datadir import DataDir
from kran.services.files import safe_path

MAX_INPUTS = 10_000
MAX_DEPTH = 64  # dirs deep a destination may be
MAX_NAME = 255  # bytes of one path component (the file system's limit)
MAX_PATH = 1024  # bytes of a whole destination


def check_destinations(dests: Sequence[str]) -> None:
    """Each destination a relative path the file system can hold, none given twice, none
    both a file and a dir ("a" and "a/b")."""
    files: set[tuple[str, ...]] = set()
    for dest in dests:
        if not dest.strip():
            raise InvalidInput("every input needs a file name (its destination)", "input")
        parts = tuple(p for p in dest.replace("\\", "/").split("/") if p not in ("", "."))
        if not parts or len(dest.encode(errors="replace")) > MAX_PATH or len(parts) > MAX_DEPTH:
            raise InvalidInput(
                f"input destination {dest[:80]!r} is empty, longer than {MAX_PATH} bytes or "
                f"more than {MAX_DEPTH} dirs deep",
                "input",
            )
        if any(len(p.encode(errors="replace")) > MAX_NAME for p in parts):
            raise InvalidInput(f"input destination {dest[:80]!r}: a name longer than {MAX_NAME} bytes", "input")
        if parts in files:
            raise InvalidInput(f"input destination {dest[:80]!r} is given twice", "input")
        files.add(parts)
    for parts in files:
        for i in range(1, len(parts)):
            if parts[:i] in files:
                raise InvalidInput(f"input {'/'.join(parts[:i])!r} is a file and a dir of another input", "input")


class Uploads:
    """Files uploaded with jobs, under uploads/<id>/."""

    def __init__(self, dirs: DataDir) -> None:
        self.dirs = dirs

    def save_inputs(self, inputs: Sequence[tuple[str, BinaryIO]]) -> str:
        """Store the uploaded files under their destination paths; returns the upload id."""
        if len(inputs) > MAX_INPUTS:
            raise InvalidInput(f"at most {MAX_INPUTS} input files", "input")
        check_destinations([dest for dest, _ in inputs])
        upload_id = uuid.uuid4().hex
        root = self.dirs.upload_dir(upload_id)
        root.mkdir(parents=True)
        try:
            for dest, data in inputs:
                target = safe_path(root, dest)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    shutil.copyfileobj(data, out, 1 << 20)
        except OSError as e:
            self.discard(upload_id)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"storing the inputs: {e.strerror} on the data dir: nothing was stored") from None
            raise InvalidInput(f"storing the inputs: {e.strerror}", "input") from None
        except BaseException:
            self.discard(upload_id)
            raise
        return upload_id

    def discard(self, upload_id: str) -> None:
        remove_tree(self.dirs.upload_dir(upload_id))
