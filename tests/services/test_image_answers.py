"""Registry answers kept for the next submits (services.images, with a registry in memory)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from kran.domain.images import ImageInfo, ImageRef
from kran.errors import RegistryError
from kran.services.image_lookups import Lookups
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
    images = _images(registry)
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


def _images(registry: Any) -> ImageManager:
    return ImageManager(
        registry, SimpleNamespace(set_credentials=lambda *a: None), SimpleNamespace(),
        SimpleNamespace(image_refs={}), SimpleNamespace(), SimpleNamespace(now=lambda: 0.0), None,
        SimpleNamespace(lookup_docker_hub=False),
    )  # fmt: skip


def test_a_batchs_answers_outlast_the_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `settle` got is what classify uses, however long the batch's lookups took: read
    back from the caches instead, a refusal (5 s) had expired and its job was accepted with
    no size, and answers (60 s) went missing too (an outside review)."""
    import kran.services.image_answers as images_module

    monkeypatch.setattr(images_module, "FAILED_TTL_S", 0.0)
    monkeypatch.setattr(images_module, "INFO_TTL_S", 0.0)

    class Answering:
        def resolve(self, ref: ImageRef, arch: str = "amd64") -> ImageInfo:
            if ref.repository == "missing":
                raise RegistryError(f"{ref}: not found")
            return ImageInfo(str(ref), "sha256:0", 7, (), "application/json")

    images = _images(Answering())
    refs = [f"reg.test:5000/{name}:1" for name in ("missing", "a", "b", "c")]
    answers = asyncio.run(images.settle(refs, "u"))
    with pytest.raises(RegistryError, match="not found") as refused:
        images.lookup(refs[0], "u", answers)
    assert refused.value.answered
    assert all((info := images.lookup(r, "u", answers)) is not None and info.size == 7 for r in refs[1:])


def test_one_batch_of_many_images_tries_each_once_per_end() -> None:
    """A batch naming 1,000 images, 2 looked up at once: each lookup's end tried every image
    left, O(n^2) tries on the event loop (100k images held it for seconds at a time); now the
    first refused stops a round (an outside review)."""
    lookups = Lookups()
    tries = 0
    start = lookups.start

    def counted(*args: Any) -> Any:
        nonlocal tries
        tries += 1
        return start(*args)

    lookups.start = counted  # type: ignore[method-assign]

    def answer(ref_text: str) -> Any:
        def resolve() -> ImageInfo:
            time.sleep(0.002)
            return ImageInfo(ref_text, "sha256:0", 1, (), "application/json")

        return resolve

    refs = [f"reg.test:5000/i{i}:1" for i in range(1000)]
    answers = asyncio.run(lookups.settle(refs, "u", answer))
    assert tries < 3 * 1000, tries
    assert len(answers) == 1000
