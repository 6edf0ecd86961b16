"""Fixtures: a real `kran serve` process, a real Docker Engine, the CLI against them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from kran.cli.main import cli
from tests.swarm_cluster import unmount_under

TEST_IMAGE = "kran-test/busybox:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as e:
        pytest.fail(f"tests need a running Docker Engine (scripts/test.sh starts one): {e}")
    return client


@pytest.fixture(scope="session")
def test_image(docker_client: Any) -> str:
    """A busybox image built locally (Docker Hub is unreachable)."""
    try:
        docker_client.images.get(TEST_IMAGE)
        return TEST_IMAGE
    except Exception:
        pass
    ctx = Path(tempfile.mkdtemp())
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n'
    )
    docker_client.images.build(path=str(ctx), tag=TEST_IMAGE, rm=True)
    shutil.rmtree(ctx)
    return TEST_IMAGE


@pytest.fixture(scope="session")
def entrypoint_image(docker_client: Any, test_image: str) -> str:
    """The busybox image with an ENTRYPOINT (`echo entry`): a job's command is its arguments."""
    name = "kran-test/entrypoint:latest"
    ctx = Path(tempfile.mkdtemp())
    (ctx / "Dockerfile").write_text(f'FROM {test_image}\nENTRYPOINT ["/bin/echo", "entry"]\n')
    docker_client.images.build(path=str(ctx), tag=name, rm=True)
    shutil.rmtree(ctx)
    return name


@dataclass
class ServerProc:
    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        scheme = "https" if "KRAN_SERVER_TLS_CERT" in self.env else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kran.cli.main",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kran serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kran serve did not answer: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def credentials(self) -> dict[str, str]:
        """The admin's client config, written by the server at its first start."""
        import tomllib

        path = Path(self.env["HOME"]) / ".config" / "kran" / "client.toml"
        return {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}

    def bearer(self, key_id: str, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key_id}.{secret}"}

    def api(self, user: str | None = None) -> httpx.Client:
        """An HTTP client acting as the admin, or as `user` (see add_user)."""
        if user is None:
            creds = self.credentials
            headers = self.bearer(creds["key_id"], creds["secret"])
        else:
            headers = self.bearer(*self.users[user])
        return httpx.Client(
            base_url=self.url, timeout=30, headers=headers, verify="KRAN_SERVER_TLS_CERT" not in self.env
        )

    def client_env(self, user: str | None = None) -> dict[str, str]:
        """The environment that points kran's CLI (and kran-cwl-runner) at this server, as
        the admin or as `user`, whatever the machine's client config says."""
        key_id, secret = self.users[user] if user else (self.credentials["key_id"], self.credentials["secret"])
        return {
            "KRAN_URL": self.url,
            "KRAN_KEY_ID": key_id,
            "KRAN_SECRET": secret,
            "KRAN_CLIENT_CONFIG": "/nonexistent/client.toml",
        }

    def poll(self, path: str, states: set[str], timeout: float, every: float = 0.05) -> dict[str, Any]:
        """GET `path` until its `state` is one of `states`."""
        deadline = time.monotonic() + timeout
        with self.api() as c:
            while True:
                body: dict[str, Any] = c.get(path).json()
                if body["state"] in states:
                    return body
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path} is {body['state']}, not {states}: {body}")
                time.sleep(every)

    def add_user(self, name: str, role: str = "user") -> tuple[str, str]:
        """Create a user with a key (as the admin); api(name) then acts as them."""
        with self.api() as c:
            c.post("/api/v1/admin/users", json={"name": name, "role": role}).raise_for_status()
            key = c.post("/api/v1/admin/keys", json={"user": name}).json()
        self.users[name] = (key["key_id"], key["secret"])
        return self.users[name]

    def wait_state(self, job_id: int, states: set[str], timeout: float = 30) -> dict[str, Any]:
        return self.poll(f"/api/v1/jobs/{job_id}", states, timeout)


def _cleanup_engine_leftovers(instance_dir: Path) -> None:
    """Kill job processes a test left behind: those in the instance's attempt cgroups, and
    the process groups the server recorded for attempts it still counts as running. (Not
    those of ended attempts: their pids are other processes' by now on a busy machine, a
    swarm node's dockerd, say, which leads a group of its own.)"""
    db = instance_dir / "kran.db"
    if not db.exists():
        return
    import sqlite3

    con = sqlite3.connect(db)
    try:
        handles = [
            r[0]
            for r in con.execute(
                "SELECT handle FROM attempts WHERE handle LIKE 'proc:%' AND state IN ('starting', 'running')"
            )
        ]
        inst = con.execute("SELECT value FROM meta WHERE key='instance'").fetchone()
    finally:
        con.close()
    for h in handles:
        pid = int(h.split(":")[1])
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    unmount_under(instance_dir)  # app volumes a killed server left mounted
    if inst:
        from kran.adapters.engines.cgroups import Cgroups

        cgroups = Cgroups.detect()
        for job, attempt, _ in cgroups.attempts(inst[0]):
            cgroups.signal_all(cgroups.relative(inst[0], job, attempt), signal.SIGKILL, wait_s=5)
        try:  # first: a container's own cgroup, inside its attempt's, keeps that from going
            import docker

            client = docker.from_env()
            for c in client.containers.list(all=True, filters={"label": f"kran.instance={inst[0]}"}):
                c.remove(force=True)
        except Exception:
            pass
        time.sleep(0.2)  # the killed jobs leave their cgroups
        cgroups.remove_instance(inst[0], with_attempts=True)  # after a kill -9 nobody else does


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used the test swarm reports what the swarm says then."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("swarm")
    if report.when == "call" and report.failed and cluster is not None:
        try:
            report.sections.append(("the swarm then", cluster.describe()))
        except Exception as e:  # (a report, not a test)
            report.sections.append(("the swarm then", f"could not describe it: {e}"))
    return report


@pytest.fixture(scope="session")
def swarm(test_image: str) -> Iterator[Any]:
    """A real 3-node Docker Swarm (each node a dockerd in its own network namespace)."""
    from tests.swarm_cluster import SwarmCluster

    cluster = SwarmCluster(3)
    try:
        cluster.up(images=(test_image,))
    except Exception as e:
        cluster.down()
        pytest.fail(f"could not build the test swarm: {e}")
    yield cluster
    cluster.down()


HEAVY_IMAGE = "kran-test/heavy:latest"
HEAVY_BYTES = 3 << 20


@pytest.fixture(scope="session")
def registry(docker_client: Any, test_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real registry with htpasswd auth on 127.0.0.1: busybox (about 1 MiB), heavy
    (busybox + 3 MiB of random data) and multi, a manifest list of both (amd64: heavy)."""
    from tests.registry import build_heavy, start_registry

    storage = tmp_path_factory.mktemp("registry-storage")
    reg = start_registry("127.0.0.1", free_port(), storage)
    try:
        build_heavy(docker_client, test_image, HEAVY_IMAGE, HEAVY_BYTES)
        reg.push(test_image, "busybox:latest")
        reg.push(HEAVY_IMAGE, "heavy:latest")
        reg.push(test_image, "multi:small")
        reg.push(HEAVY_IMAGE, "multi:big")
        small, big = reg.manifest("multi", "small"), reg.manifest("multi", "big")
        reg.put_index("multi", "latest", [(big[0], big[1], "amd64"), (small[0], small[1], "arm64")])
        reg.storage = storage  # type: ignore[attr-defined]
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def swarm_registry(swarm: Any, registry: Any) -> Iterator[Any]:
    """The same registry (same storage) on the swarm's bridge, where the nodes reach it."""
    from tests.registry import start_registry
    from tests.swarm_cluster import NET

    reg = start_registry(f"{NET}.1", free_port(), registry.storage)
    yield reg
    reg.stop()


@dataclass
class FileServer:
    """A real HTTP server on 127.0.0.1 serving `root`; `/slow/...` trickles forever."""

    root: Path
    url: str
    hits: dict[str, int]


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self) -> None:
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path.startswith("/slow/"):
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    for _ in range(600):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass
                return
            super().do_GET()

        def log_message(self, *a: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield FileServer(root, f"http://127.0.0.1:{httpd.server_address[1]}", hits)
    httpd.shutdown()
    httpd.server_close()


def start_test_server(root: Path, n: int, data_mode: int | None = None, **env: str) -> ServerProc:
    """Server number `n` under `root` (data dir and HOME of its own), with test settings."""
    data = root / f"server{n}"
    data.mkdir()
    if data_mode is not None:
        data.chmod(data_mode)
    home = root / f"home{n}"  # where the server writes the admin's client config
    home.mkdir()
    full_env = {
        **os.environ,
        "KRAN_QUEUE_RETRY_BACKOFF_S": "0.2",
        "KRAN_CAPACITY_CPUS": "4",
        "KRAN_CAPACITY_MEM_MB": "8192",
        "KRAN_CAPACITY_DISK_MB": "100000",
        "KRAN_CAPACITY_GPUS": "0",
        "HOME": str(home),
        **env,
    }
    full_env.pop("KRAN_CONFIG", None)
    s = ServerProc(data, free_port(), full_env)
    s.start()
    return s


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[ServerProc] = []

    def make(**env: str) -> ServerProc:
        s = start_test_server(tmp_path, len(servers), **env)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
        _cleanup_engine_leftovers(s.data_dir)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for a module's parametrized refusals (a server start is ~3 s): each case
    leaves the store as it found it, and checks that it did, so the cases share one."""
    s = start_test_server(tmp_path_factory.mktemp("module-server"), 0)
    yield s
    s.stop()
    _cleanup_engine_leftovers(s.data_dir)


@pytest.fixture
def swarm_server(make_server: Any, swarm: Any, tmp_path: Path) -> ServerProc:
    """A kran server on the test swarm's manager (jobs on its 3 nodes)."""
    server: ServerProc = make_server(
        KRAN_SERVER_ENGINE="swarm",
        KRAN_LOCAL_DOCKER_HOST=swarm.manager.sock,
        KRAN_CLUSTER_SHARED_DIR=str(tmp_path),
        KRAN_CAPACITY_DISK_MB="100000",
        KRAN_LOCAL_JOB_USER="",
    )
    return server


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A dir jobs may write to: they run as an unprivileged user, who cannot enter pytest's
    private tmp dirs; not in /tmp, which is private to each host job."""
    d = Path(tempfile.mkdtemp(prefix="kran-test-shared-", dir="/var/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(make_server: Any) -> ServerProc:
    s: ServerProc = make_server()
    return s


@pytest.fixture
def kran(server: ServerProc) -> Any:
    """Run the real CLI in-process against the real server."""
    return cli_for(server)


def cli_for(server: ServerProc) -> Any:
    runner = CliRunner()

    def run(*args: str, input: str | None = None, user: str | None = None) -> Result:
        return runner.invoke(cli, list(args), env=server.client_env(user), input=input, catch_exceptions=False)

    return run
