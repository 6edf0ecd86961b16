import pytest

from kran.domain.datafiles import CacheEntry, StoredFiles, cache_evictions, files_to_expire, parse_source

SHA = "ab" * 32


def test_sources() -> None:
    s = parse_source(f"https://h.org/data/ref.tar.gz#sha256={SHA.upper()}")
    assert (s.url, s.name, s.sha256, s.archive) == ("https://h.org/data/ref.tar.gz", "ref.tar.gz", SHA, ".tar.gz")
    assert parse_source("http://h/a%20b.txt").name == "a b.txt"
    assert parse_source("file:///srv/x.zip").archive == ".zip"
    assert parse_source("http://h/x.TGZ").archive == ".tgz"
    assert parse_source("http://h/x.tar.gz.txt").archive is None


@pytest.mark.parametrize(
    "bad",
    ["ftp://h/x", "http:///x", "http://h/", "http://h/x#md5=1", f"http://h/x#sha256={SHA[:-1]}", "http://h/a b", "x"],
)
def test_bad_sources(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_source(bad)


def test_cache_evicts_least_recently_used_first() -> None:
    entries = [CacheEntry("a", 50, 3.0), CacheEntry("b", 50, 1.0), CacheEntry("c", 50, 2.0)]
    assert cache_evictions(entries, 150) == []
    assert cache_evictions(entries, 100) == ["b"]
    assert cache_evictions(entries, 10) == ["b", "c", "a"]
    assert cache_evictions(entries, 10, keep=frozenset({"b"})) == ["c", "a"]


def test_retention_by_age_then_size() -> None:
    jobs = [StoredFiles(1, 100.0, 10), StoredFiles(2, 200.0, 10), StoredFiles(3, 300.0, 10)]
    assert files_to_expire(jobs, 1000.0, None, None) == []
    assert [j for j, _ in files_to_expire(jobs, 1000.0, 850.0, None)] == [1]
    assert [j for j, _ in files_to_expire(jobs, 1000.0, None, 20)] == [1]
    assert [j for j, _ in files_to_expire(jobs, 1000.0, None, 20, other_bytes=10)] == [1, 2]
    assert [j for j, _ in files_to_expire(jobs, 1000.0, 750.0, 5)] == [1, 2, 3]
    reasons = dict(files_to_expire(jobs, 1000.0, 850.0, 10))
    assert "retention" in reasons[1] and "size" in reasons[2]
