"""Files uploaded with a job (`kran submit --input LOCAL[:DEST]`).

They are kept under `uploads/<id>/` and copied into the working dir of every attempt,
so a retry starts from the same inputs.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from typing import BinaryIO

from kran.errors import InvalidInput
from kran.services.files import safe_path
from kran.services.runtime import Runtime

MAX_INPUTS = 10_000


def save_inputs(rt: Runtime, inputs: Sequence[tuple[str, BinaryIO]]) -> str:
    """Store the uploaded files under their destination paths; returns the upload id."""
    if len(inputs) > MAX_INPUTS:
        raise InvalidInput(f"at most {MAX_INPUTS} input files", "input")
    upload_id = uuid.uuid4().hex
    root = rt.upload_dir(upload_id)
    root.mkdir(parents=True)
    try:
        seen = set()
        for dest, data in inputs:
            if not dest.strip():
                raise InvalidInput("every input needs a file name (its destination)", "input")
            target = safe_path(root, dest)
            if target == root.resolve() or target in seen:
                raise InvalidInput(f"input destination {dest!r} is empty or given twice", "input")
            seen.add(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                shutil.copyfileobj(data, out, 1 << 20)
    except BaseException:
        discard(rt, upload_id)
        raise
    return upload_id


def discard(rt: Runtime, upload_id: str) -> None:
    shutil.rmtree(rt.upload_dir(upload_id), ignore_errors=True)
