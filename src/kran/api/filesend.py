"""A file served from an open fd (never re-opened by path), with single HTTP ranges."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from email.utils import formatdate

from fastapi.responses import Response, StreamingResponse

from kran.jobfs import OpenFile, read_chunks

CHUNK = 1 << 20  # fewer hops to the thread pool than 64 KiB: 1 MiB files in one
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) for a single `Range: bytes=a-b` (a-, -n too); None: the whole file.
    Raises ValueError for a range outside the file (416). Several ranges: the whole file."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ValueError("range outside the file")
    return start, end


def file_response(f: OpenFile, range_header: str | None) -> Response:
    """Streams the file's bytes as they were when opened, then closes its fd."""
    headers = {
        "accept-ranges": "bytes",
        "last-modified": formatdate(f.mtime, usegmt=True),
        "etag": f'"{f.mtime}-{f.size}"',
    }
    try:
        span = byte_range(range_header, f.size)
    except ValueError:
        os.close(f.fd)
        return Response(status_code=416, headers={"content-range": f"bytes */{f.size}"})
    start, end = span or (0, f.size)
    headers["content-length"] = str(end - start)
    if span:
        headers["content-range"] = f"bytes {start}-{end - 1}/{f.size}"

    def body() -> Iterator[bytes]:
        try:
            yield from read_chunks(f, CHUNK, start, end)
        finally:
            os.close(f.fd)

    return StreamingResponse(
        body(), status_code=206 if span else 200, headers=headers, media_type="application/octet-stream"
    )
