"""The fork server that starts host jobs' wrappers: a small, single-threaded root process.

The process engine runs this file (by path, with the standard library only) once and asks
it over a socket for each attempt. Forking a process this small is cheap, and safe (one
thread), where forking the server is neither; and the child sets up the attempt's
namespaces and mounts by system calls instead of a program for each step (unshare, mount,
umount, ip, awk...), then execs the root wrapper, the only /bin/sh left before the job's
own drop to its user (host_launch.py says what each part sees).

Each request is one JSON line: the attempt dir (the child's working dir: every path below
is relative to it), the cgroup.procs files to join, the wrapper's argv and environment
(server values only) and, for a job with private mounts, their sizes. The answer is the
wrapper's pid; when a wrapper ends, {"ended": pid, "status": wait status} follows, with
"error": why, when the child could not start it (told through a close-on-exec pipe, so the
reason comes even where the attempt dir cannot be written: a full disk). The server's end
of the socket closing ends this process; its wrappers run on (reparented, as they would be
if the server itself had started them), each writing its exit code.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SETUP_FAILED = 125  # as the shell wrapper reported it: the job never started
TICK_NS = 10**9 // os.sysconf("SC_CLK_TCK")  # /proc's start times count these

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else os.fsencode(v) for v in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def nsfs_mounts(mountinfo: bytes) -> list[bytes]:
    """Mount points of namespace files (Docker's sandboxes, `ip netns`): a copied mount
    namespace would pin those namespaces for as long as the job lives. Split as the kernel
    writes the file (newlines, spaces; octal escapes for those in a path)."""
    out = []
    for line in mountinfo.split(b"\n"):
        fields = line.split(b" ")
        if b"-" in fields[6:]:
            sep = fields.index(b"-", 6)
            if fields[sep + 1 : sep + 2] == [b"nsfs"]:
                out.append(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4]))
    return out


def _nofollow_dirs(base: str, rel: str) -> int:
    """An fd of base/rel, its missing dirs made, never following a link: the job's user owns
    base (its private /tmp) and could have put one there."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in rel.split("/"):
            if part in ("", ".", ".."):
                raise SetupError(f"odd work dir component {part!r}")
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _private(req: dict[str, Any]) -> None:
    """A mount and IPC namespace (and a network one with only its loopback, up), a private
    /tmp (the attempt's tmp, with the work dir at its own path when under /tmp), /dev/shm of
    the job's size and /proc showing only the job's own processes."""
    network = bool(req["network"])
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | (0 if network else CLONE_NEWNET)), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except SetupError as e:
        raise SetupError(f"kran: could not set up the job's private /tmp, /dev/shm and /proc ({e})") from None
    if not network:
        try:
            _loopback_up()
        except OSError as e:
            raise SetupError(f"kran: could not bring up the job's loopback ({e})") from None
    with open("/proc/self/mountinfo", "rb") as f:
        for point in reversed(nsfs_mounts(f.read())):
            _libc.umount2(point, MNT_DETACH)
    try:
        workdir = str(req["workdir"])
        if workdir.startswith("/tmp/"):
            fd = _nofollow_dirs("tmp", workdir[len("/tmp/") :])
            try:
                _mount("work", f"/proc/self/fd/{fd}", None, MS_BIND)
            finally:
                os.close(fd)
        _mount("tmp", "/tmp", None, MS_BIND | MS_REC)
        _mount("kran-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={int(req['shm'])}")
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    except (OSError, SetupError) as e:
        raise SetupError(f"kran: could not set up the job's private /tmp, /dev/shm and /proc ({e})") from None


def child(req: dict[str, Any], why_fd: int) -> None:
    """In the forked child (as the server's user): never returns. A failure's reason goes
    to `why_fd` (closed by the exec when all went well) and to the attempt's files."""
    here = False  # in the attempt dir: only then are its files written
    try:
        for sig in signal.valid_signals():  # every signal as a fresh process has it
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        signal.set_wakeup_fd(-1)
        os.setsid()
        os.chdir(req["dir"])
        here = True
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        for fd in [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2 and int(n) != why_fd]:  # few
            try:
                os.close(fd)
            except OSError:
                pass
        if req.get("private"):
            _private(req["private"])
        argv = [str(a) for a in req["argv"]]
        env = {str(k): str(v) for k, v in req["env"].items()}
        me = str(os.getpid())
        for procs in req["procs"]:  # last: what this child touched is not the job's memory
            try:
                with open(procs, "w") as f:
                    f.write(me)
            except OSError as e:  # outside its cgroup a job escapes its limits, its kill, its accounting
                raise SetupError(f"kran: could not put the job into its cgroup ({procs}: {e.strerror})") from None
        os.execve(argv[0], argv, env)
    except SetupError as e:
        _fail(str(e), here, why_fd)
    except BaseException as e:  # noqa: BLE001 - whatever it was, the attempt says so and ends
        _fail(f"kran: could not start the job ({e})", here, why_fd)
    os._exit(SETUP_FAILED)


def _fail(message: str, here: bool, why_fd: int) -> None:
    try:
        os.write(why_fd, message.encode(errors="replace")[:4000])
    except OSError:
        pass
    if here:
        try:
            with open("stderr", "w") as f:
                f.write(message + "\n")
            with open("exit_code", "w") as f:
                f.write(f"{SETUP_FAILED}\n")
        except OSError:
            pass
    os._exit(SETUP_FAILED)


def proc_start(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start (clock ticks since boot: with the pid, who it
    is); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return rest[0].decode(), rest[19].decode()


def serve(conn: socket.socket) -> None:
    """Fork a wrapper for each request; report each one's end; return when the server goes."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    buf = b""
    started: dict[int, str] = {}
    why: dict[int, bytes] = {}  # a child's failure, as it told it before ending
    while True:
        for key, _ in sel.select():
            if key.data is not None:  # a child's pipe: its failure, or closed by its exec
                _read_why(sel, key.fileobj, key.data, why)  # type: ignore[arg-type]
                continue
            if key.fileobj is wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                continue
            data = conn.recv(1 << 16)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                req = json.loads(line)
                try:
                    why_r, why_w = os.pipe2(os.O_CLOEXEC)
                except OSError as e:
                    _send(conn, {"id": req["id"], "error": str(e)})
                    continue
                try:
                    before = _boot_tick()
                    pid = os.fork()
                except OSError as e:
                    os.close(why_r)
                    os.close(why_w)
                    _send(conn, {"id": req["id"], "error": str(e)})
                    continue
                if pid == 0:
                    try:
                        os.close(why_r)
                        child(req, why_w)
                    finally:
                        os._exit(SETUP_FAILED)
                os.close(why_w)
                os.set_blocking(why_r, False)
                why[pid] = b""
                sel.register(why_r, selectors.EVENT_READ, pid)
                started[pid] = _start_of(pid, before)
                _send(conn, {"id": req["id"], "pid": pid, "start": started[pid]})
        while True:  # the wrappers that ended: reaped here, their status to the server
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for key in [k for k in sel.get_map().values() if k.data == pid]:  # what it wrote before it ended
                _read_why(sel, key.fileobj, pid, why)  # type: ignore[arg-type]
            ended = {"ended": pid, "start": started.pop(pid, "0"), "status": status}
            message = why.pop(pid, b"")
            _send(conn, {**ended, "error": message.decode(errors="replace")} if message else ended)


def _boot_tick() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // TICK_NS


def _start_of(pid: int, before: int) -> str:
    """The start time /proc gives the child just forked (not reaped yet: no other has the
    pid). The kernel stamps it during the fork, in boot-time ticks: when the clock read
    before the fork and the one after are the same tick, that is it, without reading /proc
    (0.4 ms for a child this new, on the launch's path); else /proc says."""
    if _boot_tick() == before:
        return str(before)
    return (proc_start(pid) or ("", "0"))[1]


def _read_why(sel: selectors.BaseSelector, fd: int, pid: int, why: dict[int, bytes]) -> None:
    """Read a child's pipe to its end (the child ended or exec'd), or what is there now."""
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            sel.unregister(fd)
            os.close(fd)
            return
        why[pid] = why.get(pid, b"") + data


def _send(conn: socket.socket, msg: dict[str, Any]) -> None:
    conn.sendall(json.dumps(msg).encode() + b"\n")


if __name__ == "__main__":
    sock = socket.socket(fileno=0)
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sys.exit(0)
