import pytest

from kran.domain.apps import AppError, AppRecord, VolumeSpec, check_app_name, merge_job, parse_user, parse_volume


def app(**defaults: object) -> AppRecord:
    return AppRecord("blast", "alice", True, True, 3, dict(defaults), None, None, 0.0, 0.0)


def test_job_fields_win_over_app_defaults() -> None:
    a = app(image="blast:2", cpus="2", mem="4096", env={"DB": "nt", "X": "1"}, files=["http://h/db.tgz"])
    merged = merge_job(a, {"command": ["blastn"], "mem": "1024", "env": {"X": "2"}, "files": ["http://h/q.fa"]})
    assert merged["image"] == "blast:2" and merged["cpus"] == "2" and merged["mem"] == "1024"
    assert merged["env"] == {"DB": "nt", "X": "2"}
    assert merged["files"] == ["http://h/db.tgz", "http://h/q.fa"]
    assert merged["labels"] == {"kran.app": "blast"}
    assert merged["command"] == ["blastn"]


def test_unset_job_fields_do_not_erase_defaults() -> None:
    merged = merge_job(app(image="x", timeout="1h"), {"command": ["a"], "image": None, "labels": {"k": "v"}})
    assert merged["image"] == "x" and merged["timeout"] == "1h" and merged["labels"] == {"k": "v", "kran.app": "blast"}


def test_volume_text() -> None:
    assert parse_volume("ref:2048") == VolumeSpec("ref", 2048)
    for bad in ("ref", "ref:", "Ref:10", "ref:ten", "ref:1", "a/b:10", f"r:{2**40}"):
        with pytest.raises(AppError):
            parse_volume(bad)


def test_user_needs_admin_for_system_ids() -> None:
    assert parse_user("4242", True) == (4242, 4242)
    assert parse_user("4242:100", True) == (4242, 100)
    assert parse_user("0", True) == (0, 0)
    for text, admin in (("0", False), ("4242", False), ("4242:100", False), ("x", True), ("-1", True), ("1:2:3", True)):
        with pytest.raises(AppError):
            parse_user(text, admin)


def test_app_names() -> None:
    assert check_app_name("bwa-mem2.v1") == "bwa-mem2.v1"
    for bad in ("", "Bwa", "-x", "a b", "x" * 64, "a/b"):
        with pytest.raises(AppError):
            check_app_name(bad)


def test_volume_keys_of_owners_never_meet() -> None:
    """A long name was keyed by its bare hash: a user named that hash got the same volume."""
    import hashlib

    from kran.domain.apps import volume_key_for, volume_shown

    long = "a" * 100
    bare_hash = hashlib.sha256(long.encode()).hexdigest()[:32]
    keys = {volume_key_for(o, "x", "v") for o in (long, bare_hash, bare_hash + "0" * 8, "=" + bare_hash, "..", ".")}
    assert len(keys) == 6
    for key in keys:
        where = key.split("/")
        assert len(where) == 3 and where[0].startswith("~") and where[0] not in (".", "..")
        assert len(where[0]) <= 65 and volume_shown(key) == "x/v"
    assert volume_key_for("..", "x", "v") == "~../x/v"  # one dir named "~..", not a way up
    assert volume_shown("tool/data") == "tool/data"  # loaded before names were per owner
