"""The start of every sandbox child: confines the process, then hands over to its module.

`distribute.sandbox.process` starts a child as ``python -I -c BOOT ROOT MODULE CONFIG`` with an empty
environment and ``/`` as its working directory; BOOT imports this module and calls `main`. Layers, each
applied where the machine allows it and reported in the child's "ready" frame (the parent logs them once):

1. rlimits: RLIMIT_CPU (a lifetime hard limit, plus a soft limit renewed per request by the child, so a
   child that spins between requests dies of SIGXCPU), RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE (its
   stderr is a file of the parent's) and no core files.
2. No network: a fresh network namespace (``unshare(CLONE_NEWNET)``; as a non-root user inside a new user
   namespace), where only a down loopback exists.
3. The module is imported and its ``prepare()`` run (the child initialises V8 there) while the process
   still has the server's rights: the interpreter's own files may not be readable by the user below.
4. An unprivileged user (``nobody``) when the server runs as root; the process is made non-dumpable.
5. ``PR_SET_NO_NEW_PRIVS`` and a seccomp filter that refuses (EPERM) sockets, execve, ptrace, namespaces,
   mounts, io_uring, bpf and kernel keyrings (x86-64 and arm64).

Only then ``main()`` of the module runs and reads its first request: no untrusted input is read before
every layer is in place. Kept free of imports beyond the standard library, as the child's first module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import json
import os
import platform
import resource
import struct
from typing import Any

__all__ = ["CPU_LIFETIME_SECONDS", "FSIZE_BYTES", "NOFILE", "applied", "main", "renew_cpu_limit"]

CPU_LIFETIME_SECONDS = 12 * 3600  # CPU a child may use in its whole life (one long lazy generator at most)
FSIZE_BYTES = 16 << 20  # largest file the child may write: its stderr, a temp file of the parent's
NOFILE = 64  # open files: the pipes, stderr, V8's few; imports are over before requests are read
NPROC_ROOTLESS_MARGIN = 64  # tasks (threads) a child of a non-root server may add to its user's count
NPROC_NOBODY = 512  # tasks of the unprivileged user, every child together (V8 runs single-threaded)

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# Refused system calls, by architecture: (audit arch, numbers). Sockets (creating, connecting, listening;
# socketpair stays: mini-racer's asyncio loop makes one, and it reaches nothing outside the process),
# running programs, other processes' memory, namespaces and mounts, io_uring (it can open sockets by itself),
# bpf, perf, userfaultfd, keyrings, kernel modules and handle-based opens.
_DENY = {
    "x86_64": (
        0xC000003E,
        (41, 42, 43, 49, 50, 288, 59, 322, 57, 58, 101, 310, 311, 272, 308, 165, 166, 155, 161,
         321, 298, 323, 248, 249, 250, 246, 320, 175, 313, 176, 304, 425, 426, 427),
    ),
    "aarch64": (
        0xC00000B7,
        (198, 200, 201, 202, 203, 242, 221, 281, 117, 270, 271, 97, 268, 40, 39, 41, 51,
         280, 241, 282, 217, 218, 219, 104, 294, 105, 273, 106, 265, 425, 426, 427),
    ),
}  # fmt: skip

applied: dict[str, Any] = {}  # what is in force in this child; sent with its "ready" frame

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _set(limit: int, soft: int, hard: int) -> None:
    old_hard = resource.getrlimit(limit)[1]
    if old_hard != resource.RLIM_INFINITY:
        hard = min(hard, old_hard)
        soft = min(soft, hard)
    resource.setrlimit(limit, (soft, hard))


def _tasks_of(uid: int) -> int:
    """Processes and threads whose real user is `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as status:
                    for line in status:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                count += len(os.listdir(f"/proc/{name}/task"))
                            break
            except (OSError, ValueError):
                continue
    return count


def _limit_resources(uid: int) -> None:
    _set(resource.RLIMIT_CPU, CPU_LIFETIME_SECONDS, CPU_LIFETIME_SECONDS)
    _set(resource.RLIMIT_NOFILE, NOFILE, NOFILE)
    _set(resource.RLIMIT_FSIZE, FSIZE_BYTES, FSIZE_BYTES)
    _set(resource.RLIMIT_CORE, 0, 0)
    nproc = NPROC_NOBODY if uid > 0 else _tasks_of(os.getuid()) + NPROC_ROOTLESS_MARGIN
    _set(resource.RLIMIT_NPROC, nproc, nproc)
    applied["rlimits"] = {
        name: resource.getrlimit(getattr(resource, "RLIMIT_" + name))[1]
        for name in ("CPU", "NOFILE", "NPROC", "FSIZE", "CORE")
    }


def renew_cpu_limit(seconds: float) -> None:
    """Soft RLIMIT_CPU at the CPU used so far plus `seconds` (under the lifetime hard limit)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used.ru_utime + used.ru_stime + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _unshare_network() -> str:
    if _libc.unshare(CLONE_NEWNET) == 0:
        return "network namespace"
    if os.geteuid() != 0 and _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "network namespace (in a user namespace)"
    return f"none ({os.strerror(ctypes.get_errno())})"


def _drop_user(uid: int, gid: int) -> None:
    if uid >= 0 and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, /proc/PID owned by root
    applied["uid"], applied["gid"] = os.getuid(), os.getgid()


def _seccomp() -> str:
    arch = platform.machine()
    if arch not in _DENY:
        return f"none (no filter for {arch})"
    audit_arch, numbers = _DENY[arch]
    allow, deny, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if arch == "x86_64":  # x32 system calls carry bit 30: refuse them all
        prog.append((jge, 0, 1, 0x40000000))
        prog.append((ret, 0, 0, deny))
    for number in numbers:
        prog.append((jeq, 0, 1, number))
        prog.append((ret, 0, 0, deny))
    prog.append((ret, 0, 0, allow))
    code = b"".join(struct.pack("HBBI", *insn) for insn in prog)
    buffer = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"none (no_new_privs: {os.strerror(ctypes.get_errno())})"
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return f"none ({os.strerror(ctypes.get_errno())})"
    return "seccomp filter"


def main(argv: list[str]) -> None:
    """``MODULE CONFIG``: confine this process, then run ``MODULE.main()`` (CONFIG: JSON, uid and gid)."""
    module_name, config = argv[0], json.loads(argv[1])
    uid, gid = int(config["uid"]), int(config["gid"])
    os.umask(0o077)
    _limit_resources(uid)
    applied["network"] = _unshare_network()
    module = importlib.import_module(module_name)
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        prepare(config)
    _drop_user(uid, gid)
    applied["syscalls"] = _seccomp()
    module.main()
