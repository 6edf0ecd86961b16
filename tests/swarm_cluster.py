"""A real multi-node Docker Swarm on one machine: each node a dockerd in its own network
namespace, on a private bridge (recipe: ../shared/notes/docker-here.md).

Used by the test fixtures and by bench/swarm.py. Everything it creates is named
`kran-sw*` / 10.213.0.0/24 and removed by `down()`; nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BRIDGE = "kransw0"
NET = "10.213.0"
POOL = "10.215.0.0/16"


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, a failure raises with what the command printed."""
    r = subprocess.run(list(argv), capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-1000:]}")
    return r  # type: ignore[no-any-return]


@dataclass
class Node:
    index: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    prefix: str = "kran-sw"
    extra: tuple[str, ...] = ()  # more dockerd flags (--live-restore)

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.index}"

    @property
    def addr(self) -> str:
        return f"{NET}.{10 + self.index}"

    @property
    def sock(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("docker", "-H", self.sock, *args, check=check)

    def start(self) -> None:
        """Start (or restart) this node's dockerd in its namespace."""
        assert self.proc is None, f"{self.name}'s dockerd is running"
        self._forget_pid_files()
        with open(self.root / "dockerd.log", "ab") as log:
            proc = self._popen(log)
        self.proc = proc
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "dockerd.log").read_text()[-2000:]
                raise RuntimeError(f"dockerd of {self.name} did not start: {log_text}")
            time.sleep(0.3)

    def _forget_pid_files(self) -> None:
        """A crashed dockerd leaves its pid files (and containerd's) behind, as a machine's
        /run would be before a reboot. Its pid is soon another process's on a busy machine
        (pid_max 32768 here), and dockerd then refuses to start ("pid file found") or takes that
        process for its containerd. None of this node's daemons runs now, so the files go."""
        for stale in (self.root / "dockerd.pid", self.root / "exec" / "containerd" / "containerd.pid"):
            stale.unlink(missing_ok=True)

    def _popen(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{self.name}",
                "unshare",
                "--uts",
                "sh",
                "-c",
                f'hostname {self.name} && exec "$@"',
                "sh",  # its own hostname
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "-H",
                self.sock,
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "overlay2",
                "--insecure-registry",
                f"{NET}.0/24",  # the test registry on the bridge
                *self.extra,
            ],  # fmt: skip
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def crash(self) -> None:
        """The node dies: every process in its network namespace (dockerd, containerd,
        the containers) is killed at once."""
        pids = sh("ip", "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait()
            self.proc = None

    @property
    def node_id(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


@dataclass
class SwarmCluster:
    """Node 0 is the manager; all nodes run jobs."""

    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kran-swarm-")))
    nodes: list[Node] = field(default_factory=list)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def up(self, images: tuple[str, ...] = ()) -> SwarmCluster:
        self.down_network()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        # bridged traffic passes the FORWARD chain (br_netfilter), whose policy Docker sets to DROP
        sh("iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT", check=False)
        for i in range(self.size):
            node = Node(i, self.root / f"n{i}")
            node.root.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            sh("ip", "netns", "add", node.name)
            sh("ip", "link", "add", f"{node.name}h", "type", "veth", "peer", "name", f"{node.name}n")
            sh("ip", "link", "set", f"{node.name}h", "master", BRIDGE, "up")
            sh("ip", "link", "set", f"{node.name}n", "netns", node.name)
            ns = ("ip", "netns", "exec", node.name)
            sh(*ns, "ip", "addr", "add", f"{node.addr}/24", "dev", f"{node.name}n")
            sh(*ns, "ip", "link", "set", f"{node.name}n", "up")
            sh(*ns, "ip", "link", "set", "lo", "up")
        for node in self.nodes:
            node.start()
        m = self.manager
        m.docker(
            "swarm", "init", "--advertise-addr", m.addr, "--listen-addr", f"{m.addr}:2377",
            "--default-addr-pool", POOL,
        )  # fmt: skip
        token = m.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.nodes[1:]:
            node.docker("swarm", "join", "--token", token, f"{m.addr}:2377")
        for image in images:
            self.load_image(image)
        self.wait_ready()
        return self

    def load_image(self, image: str) -> None:
        saved = self.root / "image.tar"
        sh("docker", "save", "-o", str(saved), image)
        for node in self.nodes:
            node.docker("load", "-i", str(saved))
        saved.unlink()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = self.manager.docker("node", "ls", "--format", "{{json .}}").stdout
            states = [json.loads(line)["Status"] for line in out.splitlines() if line.strip()]
            if len(states) == self.size and all(s == "Ready" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"swarm nodes not ready: {states}")
            time.sleep(0.5)

    def describe(self) -> str:
        """What the swarm says now: its nodes, every task of every service, each node's
        containers and the end of its dockerd's log (for a failed test's report)."""
        m = self.manager
        out = [m.docker("node", "ls", check=False).stdout]
        services = m.docker("service", "ls", "-q", check=False).stdout.split()
        if services:
            fmt = "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}"
            out.append(m.docker("service", "ps", "--no-trunc", "--format", fmt, *services, check=False).stdout)
        for node in self.nodes:
            out.append(f"--- {node.name}: containers")
            out.append(node.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False).stdout)
            log = node.root / "dockerd.log"
            if log.exists():
                out.append(f"--- {node.name}: dockerd.log (end)")
                out.append("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(out)

    def down_network(self) -> None:
        for i in range(8):
            sh("ip", "netns", "del", f"kran-sw{i}", check=False)
            sh("ip", "link", "del", f"kran-sw{i}h", check=False)
        sh("iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)

    def down(self) -> None:
        for node in reversed(self.nodes):
            node.docker("swarm", "leave", "--force", check=False)
            node.stop()
        for node in self.nodes:
            for sub in ("exec", "data"):
                unmount_under(node.root / sub)
        self.down_network()
        shutil.rmtree(self.root, ignore_errors=True)


def unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted at or below root."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for p in sorted(points, reverse=True):
        if p == str(root) or p.startswith(str(root) + "/"):
            sh("umount", "-l", p, check=False)
