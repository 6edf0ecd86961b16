"""App volumes: an ext4 file system in a file, loop-mounted, so its size is a hard quota.

Layout: `<data>/volumes/<key>.img`, mounted at `<data>/volumes/<key>/`, where the key is
`~<owner>/<app>/<name>` (`<app>/<name>` for apps loaded before names were per owner).
A full volume gives the job ENOSPC ("No space left on device"); nothing else on the
node fills up. Needs root (mount) and e2fsprogs. A volume stays mounted until its app is
unloaded (server restarts included), so it is never mounted twice.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from kran.errors import EngineError

FULL_BELOW_BYTES = 1 << 20


class LoopVolumes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _paths(self, key: str) -> tuple[Path, Path]:
        where, _, name = key.rpartition("/")
        return self.root / where / f"{name}.img", self.root / where / name

    def ensure(self, key: str, size_mb: int) -> Path:
        img, mnt = self._paths(key)
        with self._lock:
            if os.path.ismount(mnt):
                return mnt
            img.parent.mkdir(parents=True, exist_ok=True)
            if not img.exists():
                with open(img, "wb") as f:
                    f.truncate(size_mb << 20)
                # -m 0: no blocks reserved for root, so the job gets the whole size
                _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0", str(img)], key)
            elif img.stat().st_size < size_mb << 20:  # the app was re-loaded with a bigger volume
                os.truncate(img, size_mb << 20)
                _run(["e2fsck", "-f", "-p", str(img)], key, ok=(0, 1))
                _run(["resize2fs", "-f", str(img)], key)
            mnt.mkdir(exist_ok=True)
            _run(["mount", "-o", "loop,nosuid,nodev", str(img), str(mnt)], key)
            return mnt

    def is_full(self, key: str) -> bool:
        _, mnt = self._paths(key)
        try:
            st = os.statvfs(mnt)
        except OSError:
            return False
        return os.path.ismount(mnt) and st.f_bavail * st.f_frsize < FULL_BELOW_BYTES

    def usage(self, key: str) -> tuple[int, int] | None:
        _, mnt = self._paths(key)
        if not os.path.ismount(mnt):
            return None
        st = os.statvfs(mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def remove(self, key: str, keep_data: bool, keep_as: str | None = None) -> None:
        img, mnt = self._paths(key)
        with self._lock:
            self._unmount(mnt, key)
            if mnt.exists():
                mnt.rmdir()
            if not keep_data:
                img.unlink(missing_ok=True)
            elif keep_as is not None and keep_as != key and img.exists():
                kept, _ = self._paths(keep_as)
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(img, kept)

    @staticmethod
    def _unmount(mnt: Path, key: str) -> None:
        if os.path.ismount(mnt):
            _run(["umount", str(mnt)], key)


def _run(argv: list[str], key: str, ok: tuple[int, ...] = (0,)) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineError(f"volume {key}: {argv[0]} failed: {e}") from None
    if r.returncode not in ok:
        raise EngineError(f"volume {key}: {argv[0]} failed: {(r.stderr or r.stdout).strip()[:300]}")
