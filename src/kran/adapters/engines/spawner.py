"""The fork server that starts host jobs' wrappers: a small, single-threaded root process.

The process engine runs this file (by path, with the standard library only) once and asks
it over a socket for each attempt. Forking a process this small is cheap, and safe (one
thread), where forking the server is neither; and the child sets up the attempt's
namespaces and mounts by system calls instead of a program for each step (unshare, mount,
umount, ip, awk...), then execs the root wrapper, the only /bin/sh left before the job's
own drop to its user; or, where attempts have cgroups, stays the attempt's root waiter
and drops the job to its user itself (host_launch.py says what each part sees).

Each request is one JSON line: the attempt dir (the child's working dir: every path below
is relative to it), the cgroup.procs files to join, the argv and environment (server
values only), with "waiter" the uid and gid to drop the job to and, for a job with private
mounts, their sizes. The answer is the wrapper's (or waiter's) pid; when a wrapper ends,
{"ended": pid, "status": wait status} follows, with "error": why, when the child could not
start it (told through a close-on-exec pipe, so the reason comes even where the attempt
dir cannot be written: a full disk). The server's end of the socket closing ends this
process; its wrappers run on (reparented, as they would be if the server itself had
started them), each writing its exit code.
"""

from __future__ import annotations

import ctypes
import errno
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
from typing import Any, NoReturn

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_FD = os.sysconf("SC_OPEN_MAX")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SETUP_FAILED = 125  # as the shell wrapper reported it: the job never started
STOP_SENT = "stop_sent"  # in the attempt dir: kran sent the attempt its stop (a kill, a preemption)
SH = "/bin/sh"  # runs a job's file that is no program (no #! line), as the shell did
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a job's, unless it sets one (dash's too)
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
        signal.set_wakeup_fd(-1)
        os.setsid()
        os.chdir(req["dir"])
        here = True
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, why_fd)  # (the fork server's socket, pipes and selector)
        os.closerange(why_fd + 1, MAX_FD)
        if req.get("waiter"):
            pid = os.fork()
            if pid == 0:
                _job(req, why_fd)
            _wait(pid, req.get("waiter_procs", req["procs"]), why_fd)
        _default_signals()
        if req.get("private"):
            _private(req["private"])
        argv = [str(a) for a in req["argv"]]
        env = {str(k): str(v) for k, v in req["env"].items()}
        _join(req["procs"])  # last: what this child touched is not the job's memory
        os.execve(argv[0], argv, env)
    except SetupError as e:
        _fail(str(e), here, why_fd)
    except BaseException as e:  # noqa: BLE001 - whatever it was, the attempt says so and ends
        _fail(f"kran: could not start the job ({e})", here, why_fd)
    os._exit(SETUP_FAILED)


def _default_signals() -> None:
    """Every signal as a fresh process has it (a server under nohup ignores SIGHUP)."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _join(cgroup_procs: list[str]) -> None:
    me = str(os.getpid()).encode()
    for procs in cgroup_procs:
        try:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
        except OSError as e:  # outside its cgroup a job escapes its limits, its kill, its accounting
            raise SetupError(f"kran: could not put the job into its cgroup ({procs}: {e.strerror})") from None


def _job(req: dict[str, Any], why_fd: int) -> NoReturn:
    """The waiter's child, to be the job: a session of its own (the waiter is not in the
    job's group: a kill's signals are the job's), its output files, its namespaces and
    mounts, its cgroups, its user (no groups, no_new_privs: setpriv's drop, by system
    calls; not dumpable until the exec, which leaves nothing of this process's memory: it
    holds other requests of the fork server's), then the job's chain."""
    try:
        os.setsid()
        out, err = os.open("stdout", FILE_FLAGS, 0o666), os.open("stderr", FILE_FLAGS, 0o666)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        _default_signals()
        if req.get("private"):
            _private(req["private"])
        run_as = req.get("run_as")
        uid, gid = (int(run_as[0]), int(run_as[1])) if run_as else (-1, -1)
        argv = [str(a) for a in req["argv"]]
        env = {str(k): str(v) for k, v in req["env"].items()}
        _join(req["procs"])  # last: what this process touched is not the job's memory
        if os.path.lexists(STOP_SENT):  # killed while starting: its signals found no one here yet
            os._exit(128 + signal.SIGTERM)
        if run_as:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            _check(_libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), 0, 0, 0), "not dumpable")
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "no_new_privs")
        _exec_in(str(req["cd"]), str(req["dir"]), argv, env)
    except SetupError as e:
        message = str(e)
    except BaseException as e:  # noqa: BLE001 - whatever it was, the attempt says so and ends
        message = f"kran: could not start the job ({e})"
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # (the fork server may be gone: its pipe, no reader)
    for fd, text in ((2, message + "\n"), (why_fd, message)):
        try:
            os.write(fd, text.encode(errors="replace")[:4000])
        except OSError:
            pass
    os._exit(SETUP_FAILED)


def _exec_in(cd: str, attempt_dir: str, argv: list[str], env: dict[str, str]) -> NoReturn:
    """What `sh -c 'cd ./work && exec "$@"'` did as the job's first program, without the
    shell (one exec fewer a job), as the job's user: into its work dir (PWD and OLDPWD as the
    shell set them), then its command, looked up as dash does in the job's PATH (a name with
    a slash as it is; an empty entry is the work dir; a file found that is no program, no #!
    line, runs as a shell script). Exits as dash's exec: 127 when no file was found (or its
    name loops or is too long), 126 when one could not be run, with a line on stderr: the
    job's own end, not a set-up failure. The job's variables reach its command as it set
    them (dash reset IFS, OPTIND and PPID on the way)."""
    try:
        os.chdir(cd)
    except OSError as e:
        raise SetupError(f"kran: could not enter the job's work dir ({e.strerror})") from None
    env = {**env, "PWD": f"{attempt_dir}/{cd}", "OLDPWD": attempt_dir}
    name = argv[0]
    paths = [name] if "/" in name else [f"{d or '.'}/{name}" for d in env.get("PATH", BASE_PATH).split(":")]
    failed = errno.ENOENT
    for path in paths:
        try:
            try:
                os.execve(path, argv, env)
            except OSError as e:
                if e.errno != errno.ENOEXEC:
                    raise
                os.execve(SH, [SH, path, *argv[1:]], env)
        except (OSError, ValueError) as e:  # (ValueError: an empty name, a NUL, an unencodable value)
            code = getattr(e, "errno", None) or errno.EACCES
            if code not in (errno.ENOENT, errno.ENOTDIR):
                failed = code
    why = b"not found" if failed == errno.ENOENT else os.strerror(failed).encode()
    try:
        shown = os.fsencode(name)  # (the bytes it was given)
    except UnicodeError:
        shown = name.encode(errors="replace")
    try:
        os.write(2, (b"kran: " + shown + b": " + why + b"\n")[:4000])
    except OSError:
        pass
    os._exit(127 if failed in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG) else 126)


def _wait(pid: int, cgroup_procs: list[str], why_fd: int) -> NoReturn:
    """The attempt's root waiter (never exec'd; it does little): waits for the job and
    writes its exit code into the attempt dir, where the job cannot write. It outlives the
    server and its fork server, as the shell wrapper did, and a kill of the attempt does
    not reach it: it ignores SIGTERM and is in none of the cgroups a kill signals (v1: only
    cpuacct, where it is found after a restart; v2: the attempt's, spared by the kill; a
    stray's collect kills it there), so the attempt ends when the job does, with its code.
    It joins only now: the pages a forked Python copies are not the job's. Where the kernel
    lets it, it is exempt from the OOM killer (in a v2 memory cgroup it counts as the
    biggest process: most of it shared). If it cannot join, the job is stopped: a waiter no
    restart can find is a job that could run twice."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"-1000")
        finally:
            os.close(fd)
    except OSError:
        pass  # (no CAP_SYS_RESOURCE: a container)
    try:
        _join(cgroup_procs)
    except SetupError as e:
        os.kill(pid, signal.SIGKILL)  # (its own session: before it could start anything else)
        os.waitpid(pid, 0)
        _fail(str(e), True, why_fd)
    os.close(why_fd)  # the pipe now closes when the job execs (or ends)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)  # as a shell says it
    try:  # whole or not at all: a file cut short would read as no exit code
        fd = os.open("exit_code.tmp", FILE_FLAGS, 0o644)
        try:
            os.write(fd, f"{code}\n".encode())
        finally:
            os.close(fd)
        os.rename("exit_code.tmp", "exit_code")
    except OSError:
        pass
    os._exit(code)


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


def mark_stop(attempt_dir: str | os.PathLike[str], at: float) -> None:
    """When kran first sent the attempt its stop (epoch seconds), kept in the attempt dir
    across a restart; a later mark keeps the first. The server's engines write it (host
    jobs' and containers'); a host job's process looks for it before it runs."""
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(attempt_dir, STOP_SENT), flags, 0o644)
    except OSError:  # sent before, or the dir is gone (a full disk: kept in memory only, for a container)
        return
    try:
        os.write(fd, f"{at!r}\n".encode())
    finally:
        os.close(fd)


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
