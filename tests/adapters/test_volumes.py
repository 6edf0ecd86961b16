"""App volumes on real loop mounts (root, e2fsprogs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kran.adapters.volumes import LoopVolumes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def test_a_kept_volume_moves_to_its_new_key(tmp_path: Path) -> None:
    """A volume from before names were per owner (APP/VOL), unloaded with --keep-volume,
    was left where no re-load looked (~OWNER/APP/VOL): its data was stranded."""
    volumes = LoopVolumes(tmp_path)
    try:
        (volumes.ensure("db/store", 16) / "state").write_text("kept")
        volumes.remove("db/store", keep_data=True, keep_as="~alice/db/store")
        assert not (tmp_path / "db" / "store.img").exists()
        assert (volumes.ensure("~alice/db/store", 16) / "state").read_text() == "kept"
        volumes.remove("~alice/db/store", keep_data=False)
        assert not (tmp_path / "~alice" / "db" / "store.img").exists()
    finally:
        for key in ("db/store", "~alice/db/store"):
            volumes.remove(key, keep_data=False)
