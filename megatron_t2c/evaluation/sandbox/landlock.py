"""Landlock: the kernel's file-access sandbox for unprivileged processes, through ctypes and raw syscalls.

A ruleset *handles* access rights; once a process restricts itself with it, a handled right is granted only
beneath the paths that rules give it, for that process and everything it starts, irreversibly (even root
and capabilities cannot undo it).  Rights are checked on the resolved path, so symlinks,
``/proc/self/root/...``, ``..`` and descriptors opened afterwards all lead to the same decision.  Not
covered by any ABI so far: ``stat``/``readlink``/``chdir`` (a program can see that a path exists),
``chmod``/``chown``/``utime``/extended attributes (seccomp and the unprivileged uid stop those).

ABIs (``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)``): 1 (Linux 5.13) the file rights,
2 ``REFER`` (rename/link across directories), 3 ``TRUNCATE``, 4 TCP bind/connect, 5 ``IOCTL_DEV``, 6 scopes
(abstract Unix sockets, signals), 7 audit-logging flags.  :func:`handled_rights` takes everything the
running kernel offers.
"""

from __future__ import annotations

import os
import stat
import struct

from .libc import libc

# syscall numbers: the same on x86-64 and aarch64 (new syscalls share one table since Linux 5.x)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_MACHINES = ("x86_64", "aarch64")
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# include/uapi/linux/landlock.h
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the only rights a rule on a file may hold
READ = READ_FILE | READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (old kernel, disabled, other machine)."""
    lib = libc()
    if lib is None or os.uname().machine not in _MACHINES:
        return 0
    version = lib.syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_rights(abi: int, confine_reads: bool) -> tuple[int, int, int]:
    """``(fs, net, scoped)`` rights a ruleset handles under ``abi``: all it offers, less reads if not confined."""
    fs = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs |= REFER
    if abi >= 3:
        fs |= TRUNCATE
    if abi >= 5:
        fs |= IOCTL_DEV
    if not confine_reads:
        fs &= ~READ
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def restrict_self(abi: int, handled: tuple[int, int, int], rules: list[tuple[str, int]]) -> None:
    """Restrict this process: each handled right only beneath ``rules`` (``(path, rights)``; rights not
    handled are dropped, and a rule on a file keeps only file rights).  A path that does not exist is
    skipped.  Raises ``OSError`` if the kernel refuses; the caller must have set ``no_new_privs`` (or hold
    ``CAP_SYS_ADMIN``)."""
    lib = libc()
    if lib is None:
        raise OSError("Landlock needs ctypes")
    fs, net, scoped = handled
    attr = struct.pack("=QQQ", fs, net, scoped)[:8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = lib.syscall(_CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        raise OSError(lib.errno(), "landlock_create_ruleset: " + os.strerror(lib.errno()))
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & fs
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= FILE_RIGHTS
                if allowed and lib.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH,
                                           struct.pack("=Qi", allowed, fd), 0) != 0:
                    raise OSError(lib.errno(), f"landlock_add_rule {path}: " + os.strerror(lib.errno()))
            finally:
                os.close(fd)
        if lib.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(lib.errno(), "landlock_restrict_self: " + os.strerror(lib.errno()))
    finally:
        os.close(ruleset)
