"""ctypes bindings of the few libc calls the sandbox makes (prctl, syscall, capset), prepared once per worker.

Loading ctypes and resolving symbols costs about a millisecond: a worker calls :func:`libc` before it forks
any program, so every child finds it ready.  ``None`` where there is no libc (then the kernel layers that
need it are reported inactive and the Python guards remain).
"""

from __future__ import annotations

from typing import Any

_LIBC: list = []  # [bindings or None], filled on first use


class Libc:
    """The bound functions; each returns the C result, ``errno()`` the error of the last failed call."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        lib = ctypes.CDLL(None, use_errno=True)
        self.prctl = lib.prctl
        self.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self.prctl.restype = ctypes.c_int
        self.syscall = lib.syscall
        self.syscall.restype = ctypes.c_long
        self.capset = lib.capset
        self.capset.restype = ctypes.c_int

        class SockFprog(ctypes.Structure):  # struct sock_fprog, the argument of PR_SET_SECCOMP
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        class CapHeader(ctypes.Structure):  # struct __user_cap_header_struct
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class CapData(ctypes.Structure):  # struct __user_cap_data_struct (two of them: version 3)
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        self.SockFprog, self.CapHeader, self.CapData = SockFprog, CapHeader, CapData

    def errno(self) -> int:
        return self.ctypes.get_errno()


def libc() -> Libc | None:
    if not _LIBC:
        try:
            _LIBC.append(Libc())
        except Exception:  # noqa: BLE001 - no ctypes or no libc
            _LIBC.append(None)
    return _LIBC[0]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> bool:
    """``prctl(...) == 0``; False where it fails or there is no libc."""
    lib: Any = libc()
    return lib is not None and lib.prctl(option, arg2, arg3, arg4, arg5) == 0
