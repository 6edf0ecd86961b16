"""Durations written by people: '90', '90s', '30m', '1h30m', '2d'."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; raises ValueError with the reason."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like 30m")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        t = text.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", t):
            seconds = float(t)
        else:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(t):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(t) or not t:
                raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h30m)")
    if seconds <= 0 or seconds > 366 * 86400:
        raise ValueError(f"{text!r}: a duration must be between 0 and 366 days")
    return seconds
