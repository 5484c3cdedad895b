"""The kernel layers of a program's process: planned and probed once per worker, applied in every child.

In each program's process, after its temporary directory exists and before the program runs, in this order:

1. ``no_new_privs``;
2. Landlock (:mod:`.landlock`): writing, creating, removing, renaming, linking and truncating only beneath
   the program's directory (and ``/dev/null``); with ``confine_reads``, reading only :func:`readable_paths`
   too; no TCP (ABI 4), no signals or abstract Unix sockets beyond its own domain (ABI 6);
3. when the worker runs as root, the unprivileged uid/gid without supplementary groups (:mod:`.privileges`);
4. seccomp (:mod:`.seccomp`).

A worker probes the plan in a throwaway child (:func:`probe`) and reports what is really in force; a layer
the probe found working must then work in every child, or that program fails without running.
"""

from __future__ import annotations

import os
import sys
import tempfile

from .landlock import READ, READ_FILE, TRUNCATE, WRITE_FILE, EXECUTE, handled_rights, landlock_abi, restrict_self
from .privileges import drop_privileges, set_no_new_privs
from .seccomp import install_seccomp

#: Besides the Python installation (every prefix and ``sys.path`` directory) and the program's directory,
#: what a program may read where reads are confined: shared libraries (extension modules load them), the
#: dynamic linker's cache, time zones and a few devices.
SYSTEM_READABLE = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                   "/etc/localtime", "/usr/share/zoneinfo", "/dev/null", "/dev/zero", "/dev/urandom",
                   "/dev/random")


def python_paths() -> list[str]:
    """The interpreter's installation: its prefixes and the directories on ``sys.path``."""
    paths = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    paths += [p for p in sys.path if p and os.path.isdir(p)]
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


def readable_paths() -> list[str]:
    """Everything a program may read beyond its directory, where reads are confined (none beneath another)."""
    paths = python_paths() + [p for p in SYSTEM_READABLE if os.path.exists(p)]
    return [p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]


def _rules(plan: dict, job_dir: str) -> list[tuple[str, int]]:
    everything = ~EXECUTE  # in its own directory: all but executing files (seccomp forbids exec anyway)
    rules = [(job_dir, everything), ("/dev/null", READ_FILE | WRITE_FILE | TRUNCATE)]
    if plan["confine_reads"]:
        rules += [(p, READ) for p in plan["readable"]]
    return rules


def confine(plan: dict, job_dir: str) -> None:
    """Apply ``plan``'s layers to this process (see the module docstring); raises if one fails."""
    if plan["landlock"] or plan["seccomp"] or plan["uid"] is not None:
        if not set_no_new_privs():
            raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if plan["landlock"]:
        abi = plan["landlock"]
        restrict_self(abi, handled_rights(abi, plan["confine_reads"]), _rules(plan, job_dir))
    if plan["uid"] is not None:
        drop_privileges(plan["uid"], plan["gid"], plan["read_search"])
    if plan["seccomp"] and not install_seccomp():
        raise OSError("the seccomp filter could not be installed")


def _in_child(fn, *args) -> dict | None:
    """Run ``fn(*args)`` (which returns a JSON-able dict) in a throwaway child; its result or None."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, json.dumps(fn(*args)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    try:
        return json.loads(data)
    except ValueError:
        return None


def _readable_as(uid: int, gid: int, paths: list[str]) -> dict:
    try:
        drop_privileges(uid, gid)
        for p in paths:
            os.listdir(p)
    except OSError:
        return {"ok": False}
    return {"ok": True}


def _check(plan: dict, base: str) -> dict:
    """In the probe child: apply ``plan`` layer by layer on a scratch directory and test each."""
    job_dir = tempfile.mkdtemp(dir=base)
    if plan["uid"] is not None:
        os.chown(job_dir, plan["uid"], plan["gid"])
    out = dict(plan, landlock=0, seccomp=False, uid=None, errors=[])
    try:
        os.chdir(job_dir)
        if not set_no_new_privs():  # Landlock and seccomp need it
            out["errors"].append("prctl(PR_SET_NO_NEW_PRIVS) failed")
            plan = dict(plan, landlock=0, seccomp=False)
        if plan["landlock"]:
            abi = plan["landlock"]
            try:
                restrict_self(abi, handled_rights(abi, plan["confine_reads"]), _rules(plan, job_dir))
                try:
                    open(os.path.join(base, "outside"), "w").close()
                    out["errors"].append("Landlock did not stop a write outside the directory")
                except PermissionError:
                    out["landlock"] = abi
            except OSError as exc:
                out["errors"].append(f"Landlock: {exc}")
        if plan["uid"] is not None:
            drop_privileges(plan["uid"], plan["gid"], plan["read_search"])  # no fallback: raises
            open("inside", "w").close()
            out["uid"] = plan["uid"]
        if plan["seccomp"]:
            if install_seccomp():
                try:
                    if os.fork() == 0:
                        os._exit(0)
                    out["errors"].append("seccomp did not stop fork")
                except PermissionError:
                    out["seccomp"] = True
            else:
                out["errors"].append("seccomp: the filter could not be installed")
    except OSError as exc:
        out["errors"].append(f"{type(exc).__name__}: {exc}")
        out["failed"] = True
    return out


def probe(limits: dict, base: str) -> dict:
    """The plan the worker's children will apply, with every layer checked in a throwaway child.

    ``limits``: the harness's wishes (``seccomp``, ``landlock``, ``confine_reads``, ``uid``/``gid`` or
    None).  Returns ``{"landlock": ABI or 0, "confine_reads", "readable", "uid", "gid", "read_search",
    "seccomp", "errors": [...]}``; raises ``RuntimeError`` if the uid cannot be dropped (the sandbox never
    falls back to running programs as root).
    """
    uid, gid = limits.get("uid"), limits.get("gid")
    abi = landlock_abi() if limits.get("landlock", True) else 0
    plan = {"landlock": abi, "confine_reads": bool(abi and limits.get("confine_reads", True)),
            "readable": readable_paths(), "uid": uid, "gid": gid, "read_search": False,
            "seccomp": bool(limits.get("seccomp", True))}
    if uid is not None:
        os.chmod(base, 0o711)  # the program's uid may enter its own directory below (not list the others)
        readable = _in_child(_readable_as, uid, gid, python_paths())
        plan["read_search"] = not (readable and readable["ok"])
    checked = _in_child(_check, plan, base)
    if checked is None or checked.get("failed") or checked["uid"] != uid:
        raise RuntimeError("the sandbox could not set up a program's process: "
                           + "; ".join((checked or {}).get("errors") or ["the probe died"]))
    if not checked["landlock"]:
        checked["confine_reads"] = False
    return checked
