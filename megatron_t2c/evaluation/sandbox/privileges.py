"""Running a program as an unprivileged user: resolving ``USER[:GROUP]`` and dropping root for good."""

from __future__ import annotations

import grp
import os
import pwd

from .libc import libc, prctl

_PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS = 8, 38
_CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522


def resolve_user(spec: str) -> tuple[int, int]:
    """``(uid, gid)`` of ``USER[:GROUP]`` (names or numbers); the group defaults to the user's primary group."""
    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, primary = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise ValueError(f"no such user: {user!r}") from None
        uid, primary = int(user), None  # a bare uid without a passwd entry (containers)
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"no such group: {group!r}") from None
    elif primary is None:
        raise ValueError(f"uid {uid} has no passwd entry: name its group too ({uid}:GID)")
    else:
        gid = primary
    return uid, gid


def set_no_new_privs() -> bool:
    """``PR_SET_NO_NEW_PRIVS``: nothing this process executes can gain privileges (setuid bits, file caps)."""
    return prctl(_PR_SET_NO_NEW_PRIVS, 1)


def drop_privileges(uid: int, gid: int, keep_read_search: bool = False) -> None:
    """Become ``uid``/``gid`` (real, effective and saved) with no supplementary groups; raises on failure.

    ``keep_read_search``: keep ``CAP_DAC_READ_SEARCH`` (and nothing else) in the effective and permitted
    sets.  It lets the process read files its uid may not, and is needed where the Python installation is
    private to the harness user (e.g. under ``/root``, which ``nobody`` cannot enter).  Landlock still
    applies (no capability bypasses it): where reads are confined, it reads only the readable paths.
    """
    if keep_read_search and not prctl(_PR_SET_KEEPCAPS, 1):
        raise OSError("prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if keep_read_search:
        lib = libc()
        if lib is None:
            raise OSError("keeping CAP_DAC_READ_SEARCH needs ctypes")
        header = lib.CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (lib.CapData * 2)()
        data[0].effective = data[0].permitted = 1 << _CAP_DAC_READ_SEARCH
        if lib.capset(lib.ctypes.byref(header), data) != 0:
            raise OSError(lib.errno(), "capset: " + os.strerror(lib.errno()))
        prctl(_PR_SET_KEEPCAPS, 0)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError(f"could not become uid {uid}, gid {gid}")
