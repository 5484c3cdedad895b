"""The kernel layers of the sandbox (evaluation/sandbox/confinement.py, landlock.py, privileges.py, seccomp.py):
hostile programs through plain Python, with the in-process guards removed first, and through ctypes, aimed at
a world-writable victim directory outside the sandbox, fail and leave it untouched; reads outside the
readable paths are refused; programs never run as root; the pool reports what is in force."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from megatron_t2c.evaluation.sandbox.config import SandboxConfig
from megatron_t2c.evaluation.sandbox.landlock import READ, REFER, TRUNCATE, handled_rights, landlock_abi
from megatron_t2c.evaluation.sandbox.pool import ExecutionPool
from megatron_t2c.evaluation.sandbox.privileges import resolve_user
from megatron_t2c.evaluation.sandbox.verdicts import FAILED, PASSED

ROOT = os.geteuid() == 0
SHM = "/dev/shm"  # where the workers make the programs' directories, if writable

#: Prepended to a program: put back every original the guards replaced (taken from their closures), the
#: way a hostile completion would, so that only the kernel stands between it and the victim.
UNGUARD = """import _io, builtins, io, os, posix, shutil
def _original(fn):
    for cell in getattr(fn, '__closure__', None) or ():
        if type(cell.cell_contents) is type(len):
            return cell.cell_contents
    return fn
for _module in (os, posix):
    for _name in ('open', 'remove', 'unlink', 'rmdir', 'mkdir', 'chmod', 'truncate', 'symlink', 'link',
                  'rename', 'replace', 'utime'):
        setattr(_module, _name, _original(getattr(_module, _name)))
builtins.open = io.open = _io.open
assert type(os.rename) is type(os.open) is type(len) and open is _io.open
"""

CTYPES = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def ok(result):
    assert result >= 0, os.strerror(ctypes.get_errno())
    return result
"""


@pytest.fixture(scope="module")
def pool():
    with ExecutionPool(2, SandboxConfig(timeout=5.0, memory_mb=512)) as p:
        yield p


@pytest.fixture
def victim():
    """A directory outside the sandbox that any uid may write (so that only the sandbox protects it), on the
    file system of the programs' directories where that is /dev/shm (so that renaming or linking a file into
    the sandbox is refused by Landlock, not by EXDEV between file systems)."""
    path = Path(tempfile.mkdtemp(prefix="t2c-victim-", dir=SHM if os.access(SHM, os.W_OK) else None))
    path.chmod(0o777)
    for name in ("empty", "sub"):
        (path / name).mkdir()
        (path / name).chmod(0o777)
    for file in (path / "file.txt", path / "sub" / "inner.txt"):
        file.write_text("keep me")
        file.chmod(0o666)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def snapshot(root: Path) -> dict:
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns, st.st_ino,
                       p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def attacks(v: Path) -> dict[str, tuple[str, str]]:
    """``name: (plain Python, ctypes)``: each writes, creates, removes, renames, links or truncates in ``v``."""
    f, e, s = repr(str(v / "file.txt")), repr(str(v / "empty")), repr(str(v / "sub"))
    new, proc = repr(str(v / "new")), repr("/proc/self/root" + str(v / "file.txt"))
    wr = "os.O_WRONLY | os.O_CREAT | os.O_TRUNC"
    return {
        "create and write": (f"open({new}, 'w').write('x')",
                             f"fd = ok(libc.open({new}.encode(), {wr}, 0o644))\nok(libc.write(fd, b'x', 1))"),
        "open w on an existing file": (f"open({f}, 'w').write('x')",
                                       f"fd = ok(libc.open({f}.encode(), {wr}, 0o644))\nok(libc.write(fd, b'x', 1))"),
        "append": (f"open({f}, 'a').write('x')",
                   f"fd = ok(libc.open({f}.encode(), os.O_WRONLY | os.O_APPEND))\nok(libc.write(fd, b'x', 1))"),
        "rename": (f"os.rename({f}, {new})", f"ok(libc.rename({f}.encode(), {new}.encode()))"),
        "rename into the sandbox": (f"os.rename({f}, 'stolen')", f"ok(libc.rename({f}.encode(), b'stolen'))"),
        "unlink": (f"os.unlink({f})", f"ok(libc.unlink({f}.encode()))"),
        "rmdir": (f"os.rmdir({e})", f"ok(libc.rmdir({e}.encode()))"),
        "rmtree": (f"shutil.rmtree({s})", f"ok(libc.unlink({str(v / 'sub' / 'inner.txt')!r}.encode()))"),
        "mkdir": (f"os.mkdir({new})", f"ok(libc.mkdir({new}.encode(), 0o777))"),
        "symlink": (f"os.symlink('/etc/passwd', {new})", f"ok(libc.symlink(b'/etc/passwd', {new}.encode()))"),
        "hard link": (f"os.link({f}, {new})", f"ok(libc.link({f}.encode(), {new}.encode()))"),
        "hard link into the sandbox, write through it": (
            f"os.link({f}, 'hard')\nopen('hard', 'w').write('x')",
            f"ok(libc.link({f}.encode(), b'hard'))\nfd = ok(libc.open(b'hard', os.O_WRONLY))\n"
            "ok(libc.write(fd, b'x', 1))"),
        "symlink out of the sandbox, write through it": (
            f"os.symlink({f}, 'link')\nopen('link', 'w').write('x')",
            f"ok(libc.symlink({f}.encode(), b'link'))\nfd = ok(libc.open(b'link', os.O_WRONLY))\n"
            "ok(libc.write(fd, b'x', 1))"),
        "chmod": (f"os.chmod({f}, 0o600)", f"ok(libc.chmod({f}.encode(), 0o600))"),
        "truncate": (f"os.truncate({f}, 0)", f"ok(libc.truncate({f}.encode(), 0))"),
        "utime": (f"os.utime({f}, (0, 0))", f"ok(libc.utimes({f}.encode(), None))"),
        "through /proc/self/root": (f"open({proc}, 'w').write('x')",
                                    f"fd = ok(libc.open({proc}.encode(), {wr}, 0o644))\nok(libc.write(fd, b'x', 1))"),
    }


def test_pool_reports_the_layers_in_force(pool):
    caps = pool.capabilities
    abi = landlock_abi()
    assert caps["landlock"] == abi and caps["confine_reads"] == bool(abi)
    assert caps["seccomp"] is True and caps["subreaper"] is True
    uid, gid = resolve_user("nobody") if ROOT else (os.getuid(), os.getgid())
    assert (caps["uid"], caps["gid"]) == (uid, gid)
    assert caps["gaps"] == ([] if abi else [g for g in caps["gaps"] if "Landlock" in g])
    # what a program sees: that uid and gid, no supplementary groups, no_new_privs (PR_GET_NO_NEW_PRIVS)
    probe = (f"import ctypes, os\nassert (os.getuid(), os.geteuid(), os.getgid()) == ({uid}, {uid}, {gid})\n"
             f"assert os.getgroups() == [] or not {ROOT}\nassert ctypes.CDLL(None).prctl(39, 0, 0, 0, 0) == 1\n")
    assert pool.run(probe).result == PASSED


@pytest.mark.skipif(not landlock_abi(), reason="the kernel has no Landlock")
def test_hostile_programs_leave_the_victim_untouched(pool, victim):
    before = snapshot(victim)
    jobs = {}
    for name, (plain, through_ctypes) in attacks(victim).items():
        jobs[name + " (python)"] = "import os, shutil\n" + plain
        jobs[name + " (guards removed)"] = UNGUARD + plain
        jobs[name + " (ctypes)"] = CTYPES + through_ctypes
    verdicts = dict(pool.imap_unordered(jobs.items()))
    assert {k: v.result for k, v in verdicts.items() if v.status != FAILED} == {}
    assert snapshot(victim) == before
    # the guards were really gone, and the kernel (not Python) refused: EACCES/EPERM/EXDEV from the syscall
    removed = {k: v.result for k, v in verdicts.items() if k.endswith("(guards removed)")}
    assert not [r for r in removed.values() if "sandbox directory" in r], removed
    # the same operations inside the sandbox's own directory work, with and without the guards
    inside = ("open('f', 'w').write('x')\nos.mkdir('d')\nos.rename('f', 'd/g')\nos.link('d/g', 'h')\n"
              "os.symlink('h', 's')\nopen('s', 'a').write('y')\nos.truncate('h', 1)\nos.unlink('s')\n"
              "shutil.rmtree('d')\nassert open('h').read() == 'x'\nopen('/dev/null', 'w').write('z')\n")
    assert pool.run("import os, shutil\n" + inside).result == PASSED
    assert pool.run(UNGUARD + inside).result == PASSED


@pytest.mark.skipif(not landlock_abi(), reason="the kernel has no Landlock")
def test_reads_outside_the_readable_paths_are_refused(pool):
    """A file the harness user can read, under its home, is out of a program's reach; the Python
    installation is not (a module never imported by the worker still imports)."""
    home = Path(tempfile.mkdtemp(prefix=".t2c-sandbox-read-", dir=Path.home()))
    try:
        home.chmod(0o755)
        secret = home / "secret.txt"
        secret.write_text("secret")
        secret.chmod(0o644)
        path = repr(str(secret))
        for program in (f"open({path}).read()", UNGUARD + f"open({path}).read()",
                        CTYPES + f"ok(libc.open({path}.encode(), os.O_RDONLY))",
                        f"import os\nos.listdir({str(home)!r})"):
            verdict = pool.run(program)
            assert verdict.status == FAILED and ("PermissionError" in verdict.result
                                                 or "Permission denied" in verdict.result), verdict.result
        assert pool.run("import zipfile, xml.dom.minidom, wave, email.mime.text, csv, uuid").result == PASSED
        assert pool.run("import os\nassert os.listdir('.') == []").result == PASSED
    finally:
        shutil.rmtree(home)


def test_missing_landlock_is_reported_and_can_be_required():
    with pytest.warns(RuntimeWarning) as warned:
        pool = ExecutionPool(1, SandboxConfig(landlock=False))
    assert any("sandbox: Landlock is not in force" in str(w.message) for w in warned)
    with pool:
        caps = pool.capabilities
        assert caps["landlock"] == 0 and not caps["confine_reads"]
        assert any("Landlock" in gap for gap in caps["gaps"])
        assert any("read any file" in gap for gap in caps["gaps"]) == caps["read_search"]
        assert pool.run("assert 1").passed
    with pytest.raises(RuntimeError, match="--require-confinement.*Landlock"):
        ExecutionPool(1, SandboxConfig(landlock=False, require_confinement=True))
    if landlock_abi() and os.uname().machine in ("x86_64", "aarch64"):  # Landlock and a seccomp table
        with ExecutionPool(1, SandboxConfig(require_confinement=True)) as full:  # fully confined here
            assert full.capabilities["gaps"] == [] and full.run("pass").passed


def test_handled_rights_follow_the_abi():
    assert handled_rights(1, True) == ((1 << 13) - 1, 0, 0)
    fs, net, scoped = handled_rights(3, True)
    assert fs & REFER and fs & TRUNCATE and not net and not scoped
    fs, net, scoped = handled_rights(7, False)
    assert not fs & READ and fs & TRUNCATE and net == 3 and scoped == 3


def test_resolve_user():
    nobody = resolve_user("nobody")
    assert nobody[0] == 65534 or nobody[0] > 0
    assert resolve_user("0:0") == (0, 0)
    assert resolve_user("4242:4243") == (4242, 4243)
    with pytest.raises(ValueError, match="no such user"):
        resolve_user("no-such-user-t2c")
    with pytest.raises(ValueError, match="name its group"):
        resolve_user("4242")


@pytest.mark.skipif(not ROOT, reason="the harness must run as root")
def test_programs_never_run_as_root():
    with pytest.raises(ValueError, match="never run as root"):
        ExecutionPool(1, SandboxConfig(sandbox_user="root"))
    with pytest.raises(ValueError, match="no such user"):
        ExecutionPool(1, SandboxConfig(sandbox_user="no-such-user-t2c"))
