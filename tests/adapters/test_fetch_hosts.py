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
from kran.domain.datafiles import host_allowed, parse_source
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
    anywhere = HttpFetcher(tmp_path / "c", 1 << 20, 10, ())
    anywhere.fetch_to(parse_source(f"http://{site}/away"), tmp_path / "followed")  # the default: any host
    assert (tmp_path / "followed").read_bytes() == b"data\n"
    assert not (tmp_path / "redirected").exists() and not (tmp_path / "x").exists()
