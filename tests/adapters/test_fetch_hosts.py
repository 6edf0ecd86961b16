"""files.fetch_hosts: downloads reach only the hosts an admin allows, every redirect hop
checked (a URL on an allowed host that redirects to an internal one is refused), against a
real HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kran.adapters.files import HttpFetcher
from kran.domain.datafiles import address_refused, host_allowed, parse_source
from kran.errors import FetchError


@pytest.fixture
def site() -> Iterator[str]:
    """127.0.0.1 serves /data; /away redirects to the same server named `localhost`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/data")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"data\n")

        def log_message(self, *a: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_host_patterns() -> None:
    assert host_allowed("https://ftp.ebi.ac.uk/x", ["*.ebi.ac.uk"])
    assert not host_allowed("https://ebi.ac.uk.evil.org/x", ["*.ebi.ac.uk"])
    assert not host_allowed("http://169.254.169.254/latest", ["*.ebi.ac.uk"])
    assert host_allowed("http://ANY.host/x", [])  # none set: any host
    assert host_allowed("file:///data/x", ["nothing"])  # file:// has its own roots


def test_downloads_and_their_redirects_reach_only_allowed_hosts(site: str, tmp_path: Path) -> None:
    allowed = HttpFetcher(tmp_path / "c", 1 << 20, 10, (), ("127.0.0.1",))
    allowed.fetch_to(parse_source(f"http://{site}/data.txt"), tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == b"data\n"
    with pytest.raises(FetchError, match="localhost is not a host downloads may reach"):
        allowed.fetch_to(parse_source(f"http://{site}/away"), tmp_path / "redirected")
    with pytest.raises(FetchError, match="not a host downloads may reach"):
        HttpFetcher(tmp_path / "c", 1 << 20, 10, (), ("*.example.org",)).fetch_to(
            parse_source(f"http://{site}/data.txt"), tmp_path / "x"
        )
    both = HttpFetcher(tmp_path / "c", 1 << 20, 10, (), ("127.0.0.1", "localhost"))
    both.fetch_to(parse_source(f"http://{site}/away"), tmp_path / "followed")
    assert (tmp_path / "followed").read_bytes() == b"data\n"
    assert not (tmp_path / "redirected").exists() and not (tmp_path / "x").exists()


def test_by_default_no_download_reaches_a_non_public_address(site: str, tmp_path: Path) -> None:
    """files.fetch_hosts empty (the default): any public host, but no loopback, private or
    link-local address unless named there. The server fetches from inside the operator's
    network what a user names (an attack read a loopback-only service through a job)."""
    default = HttpFetcher(tmp_path / "c", 1 << 20, 10, ())
    port = site.rsplit(":", 1)[1]
    for url in (f"http://{site}/data.txt", f"http://localhost:{port}/data.txt", f"http://[::ffff:127.0.0.1]:{port}/x"):
        with pytest.raises(FetchError, match="loopback address"):
            default.fetch_to(parse_source(url), tmp_path / "got")
    assert not (tmp_path / "got").exists()
    with pytest.raises(FetchError, match="InvalidURL"):  # (not an HTTPError: an engine error, before)
        default.fetch_to(parse_source("http://0177.0.0.1/x"), tmp_path / "got")
    inside = ("10.1.2.3", "169.254.169.254", "fd00::1", "192.168.0.1", "fec0::1", "0.0.0.0", "::")
    wrapped = ("64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:10.0.0.1", "64:ff9b:1:7f00:1::808:808")
    for host, address in [("h", a) for a in inside + wrapped]:
        assert address_refused(host, address, ()), address
    assert address_refused("h", "93.184.216.34", ()) is None  # public
    assert address_refused("h", "64:ff9b::5db8:d822", ()) is None  # NAT64 of a public one
    assert address_refused("data.internal", "10.1.2.3", ("*.internal",)) is None  # named: the admin's choice
    assert address_refused("other", "10.1.2.3", ("*.internal",))
