"""Registry answers kept for the next submits (services.images, with a registry in memory)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from kran.domain.images import ImageInfo, ImageRef
from kran.services.images import ImageManager


class Registry:
    """Answers each lookup once `go` is set; counts them."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def resolve(self, ref: ImageRef, arch: str = "amd64") -> ImageInfo:
        self.calls += 1
        self.go.wait(10)
        return ImageInfo(str(ref), "sha256:0", 1, (), "application/json")

    def check_login(self, registry: str, creds: Any = None) -> None:
        pass


def test_a_lookup_asked_before_a_login_does_not_keep_its_answer() -> None:
    """A login clears the answers given without its credentials; a lookup under way then,
    asked without them, wrote its answer back afterwards, served to everyone for a minute
    (an outside review)."""
    registry = Registry()
    store = SimpleNamespace(set_credentials=lambda *a: None)
    images = ImageManager(
        registry, store, SimpleNamespace(), SimpleNamespace(image_refs={}), SimpleNamespace(),
        SimpleNamespace(now=lambda: 0.0), None, SimpleNamespace(lookup_docker_hub=False),
    )  # fmt: skip
    answers: list[ImageInfo | None] = []
    before = threading.Thread(target=lambda: answers.append(images.lookup("reg.test:5000/x:1", "u")))
    before.start()
    while registry.calls == 0:
        threading.Event().wait(0.01)
    images.login("reg.test:5000", "user", "secret")
    registry.go.set()
    before.join(10)
    assert answers and answers[0] is not None  # (the one who asked gets it)
    images.lookup("reg.test:5000/x:1", "u")
    assert registry.calls == 2  # asked again, with the credentials
