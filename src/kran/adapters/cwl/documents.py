"""Limits on a CWL document before cwltool parses it: a few KB of YAML anchors and aliases
("billion laughs") expand to billions of nodes and pin the server's CPU. The document's
events are read once (linear in its size, nothing expanded) and the size it would expand
to is counted: past the limits it is refused with the reason. An empty one is refused too."""

from __future__ import annotations

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    ScalarEvent,
)

MAX_BYTES = 16 << 20  # one document (or job order) file
MAX_NODES = 1_000_000  # what it expands to, aliases counted as their anchor's size
MAX_DEPTH = 200  # nesting of mappings and sequences


def yaml_problem(text: str, name: str = "document") -> str | None:
    """Why `text` is refused (None: within the limits, or not YAML at all: cwltool says)."""
    if len(text) > MAX_BYTES:
        return f"{name} is larger than {MAX_BYTES >> 20} MiB"
    sizes: dict[str, int] = {}
    anchors: list[str | None] = []  # the open collections' anchors
    counts: list[int] = []  # and the nodes in each so far
    total = 0
    try:
        for event in YAML(typ="safe").parse(text):
            if isinstance(event, CollectionStartEvent):
                anchors.append(event.anchor)
                counts.append(1)
                if len(counts) > MAX_DEPTH:
                    return f"{name} nests more than {MAX_DEPTH} levels deep"
                continue
            if isinstance(event, CollectionEndEvent):
                anchor, n = anchors.pop(), counts.pop()
                if anchor:
                    sizes[anchor] = n
            elif isinstance(event, ScalarEvent):
                n = 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, AliasEvent):
                n = sizes.get(event.anchor, 1)
            else:
                continue
            if counts:
                counts[-1] += n
            else:
                total += n
            if total + sum(counts) > MAX_NODES:
                return f"{name} expands to more than {MAX_NODES} YAML nodes (aliases of anchors, nested)"
    except YAMLError:
        return None  # not YAML: cwltool's own error says what is wrong
    if total == 0:  # cwltool's error would be an empty "The error was:" (a StopIteration)
        return f"{name} is empty"
    return None
