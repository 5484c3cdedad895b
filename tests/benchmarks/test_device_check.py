"""benchmarks/device_check.sh on the CPU: valid bash, a dry run that lists the GPU steps within the 8-minute
budget without writing anything, and a wheel list in its header that covers every module it installs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_the_script_parses_and_needs_an_output_folder():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    done = _run()
    assert done.returncode == 2 and "usage:" in done.stderr


def test_dry_run_lists_the_gpu_steps_within_the_budget_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    done = _run(str(out), "--dry-run", PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    assert not out.exists()
    text = done.stdout
    assert f"python: Python {sys.version.split()[0]}" in text
    assert "would install from" in text and "with --no-deps: nothing" in text  # this venv has every module
    steps = dict(re.findall(r"^step (\S+) \(at most (\d+)s\)", text, re.M))
    assert list(steps) == ["pytest-gpu", "throughput", "throughput-2.6b", "sampling"]
    assert sum(map(int, steps.values())) <= 480 and "budget 480s" in text
    assert "pytest -m gpu tests/gpu" in text
    assert "--presets pangu-2.6b" in text and "--use-distributed-optimizer" in text
    assert "--n-samples 200" in text and "generation_throughput.py" in text


def test_the_header_downloads_every_wheel_the_script_may_install():
    text = SCRIPT.read_text()
    header = text[:text.index("set -uo pipefail")]
    download = " ".join(line.lstrip("#").strip().rstrip("\\") for line in header.splitlines()
                        if "pip download" in line or line.startswith("#       "))
    requirements = re.findall(r'^\s+"[\w.]+\|([^"]+)"$', text, re.M)
    assert len(requirements) >= 10
    for requirement in requirements:
        assert f" {requirement} " in f" {download} ", requirement
    assert "torch" not in re.sub(r"tree-sitter\S*", "", download)  # torch is never downloaded or installed
