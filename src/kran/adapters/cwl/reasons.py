"""A run's failure reason from cwltool's error message.

cwltool's message is several lines: a header ("Tool definition failed validation:"), then
schema-salad's explanation wrapped over many indented lines, or an expression's whole
script and the JavaScript stack. The reason is that message on one line, without the
header, the script and the stack frames, bounded in length; and where cwltool printed
"The error was:" with nothing after it (an exception with no message), the exception.
"""

from __future__ import annotations

import re

MAX_REASON = 1000

HEADERS = re.compile(
    r"Tool definition failed (validation|initialization):"
    r"|Workflow error, try again with --debug for more information:"
    r"|I'm sorry, I couldn't load this CWL file.*"
)
JS_FRAME = re.compile(r"at \S.*|\(.*:\d+:\d+\)'?|\^")  # a stack frame, its wrapped tail, the caret
ERROR_WAS = "The error was:"


def storable(text: str) -> str:
    """`text` with its control characters (a NUL from a step's name) escaped: a reason is
    stored, and PostgreSQL refuses a NUL in text."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def failure_reason(message: str, cause: BaseException | None = None) -> str:
    """One bounded line saying why, from cwltool's (multi-line) error `message`; `cause`:
    the exception being handled when it was logged, if any."""
    kept: list[str] = []
    in_script = False
    for raw in storable(message).splitlines():
        line = raw.strip()
        if line.startswith("script was:"):
            in_script = True
        elif line.startswith("stdout was:"):
            in_script = False
            if line == "stdout was: ''":
                continue
        if in_script or not line or HEADERS.fullmatch(line) or JS_FRAME.fullmatch(line):
            continue
        if line.startswith(ERROR_WAS):
            line = line[len(ERROR_WAS) :].strip()
            if not line and cause is not None:
                line = type(cause).__name__ + (f": {cause}" if str(cause) else "")
            if not line:
                continue
        kept.append(line)
    text = re.sub(r"\s+", " ", " ".join(kept)).strip() or storable(message).strip()
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
