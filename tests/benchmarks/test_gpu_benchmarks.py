"""The GPU benchmarks' ``--smoke`` modes run on the CPU and report every case (issue 8).

``benchmarks/gpu_throughput.py --smoke``: every stock variant and objective x separation that can train on the
CPU, each with positive tokens/s, and the loss-agreement check against the stock dense model passed for every
backend (FlexAttention forward included).  ``benchmarks/generation_throughput.py --smoke``: our sampler, the
no-cache anchor and HF ``generate()`` of the exported model, each with positive tokens/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJECTIVES = ("text-code", "code", "corrupt-code", "prefix-code")
SEPARATIONS = ("none", "partial", "full")


def _run(script: str, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_gpu_throughput_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    stdout = _run("gpu_throughput.py", "--smoke", "--output", str(out))
    result = json.loads(out.read_text())
    rows = {r["case"]: r for r in result["rows"]}
    want = {"pangu-100m/stock/dense", "pangu-100m/stock/sdpa-causal"}
    want |= {f"pangu-100m/sdpa/{s}/{o}" for s in SEPARATIONS for o in OBJECTIVES}
    assert set(rows) == want
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["loss"] == r["loss"]  # finite loss
        assert r["mfu"] is None and r["peak_gib"] is None  # CPU: no peak, no CUDA memory
        assert f"| {r['case']} |" in stdout  # the markdown table
    assert rows["pangu-100m/sdpa/full/code"]["separated"] > rows["pangu-100m/sdpa/partial/code"]["separated"] > 0
    none = "pangu-100m/sdpa/none"
    assert rows[f"{none}/code"]["loss_positions"] < rows[f"{none}/text-code"]["loss_positions"]
    assert any("flex" in note for note in result["skipped"])  # no FlexAttention backward on the CPU
    checks = {c["case"] for c in result["loss_check"]}
    assert checks == {f"pangu-100m/{b}/{s}/{o}" for b in ("sdpa", "flex") for s in SEPARATIONS for o in OBJECTIVES}
    assert result["loss_check_passed"] is True and result["errors"] == []
    assert "loss agreement with the stock dense model (fp32): 24/24 within tolerance" in stdout


def test_generation_throughput_smoke(tmp_path):
    out = tmp_path / "gen.json"
    _run("generation_throughput.py", "--smoke", "--output", str(out))
    figures = json.loads(out.read_text())
    assert figures["workload"]["sampling"]["top_p"] == 0.8 and figures["workload"]["sampling"]["temperature"] == 0.95
    assert figures["kv_cached"]["tokens_per_s"] > 0 and figures["no_cache_anchor"]["tokens_per_s"] > 0
    assert figures["hf_generate"]["available"], figures["hf_generate"]
    assert figures["hf_generate"]["tokens_per_s"] > 0
    assert figures["kv_cached"]["tokens"] == figures["hf_generate"]["tokens"]  # the same work
    assert figures["goal"]["value"] == figures["ours_over_hf_generate"]
    assert figures["goal"]["met"] == (figures["ours_over_hf_generate"] >= 2.0)


def test_gpu_throughput_prints_the_anchors_and_runs_the_large_model_path(tmp_path):
    # the 2.6B path (distributed optimiser, full recompute) on the smoke shapes; the anchors beside
    out = tmp_path / "large.json"
    stdout = _run("gpu_throughput.py", "--smoke", "--presets", "pangu-2.6b", "--stock", "dense", "--backends", "sdpa",
                  "--separations", "full", "--objectives", "prefix-code", "--use-distributed-optimizer",
                  "--recompute-activations", "full", "--no-check-loss", "--output", str(out))
    result = json.loads(out.read_text())
    assert result["config"]["use_distributed_optimizer"] and result["config"]["recompute_activations"] == "full"
    assert {r["case"] for r in result["rows"]} == {"pangu-2.6b/stock/dense", "pangu-2.6b/sdpa/full/prefix-code"}
    assert all(r["tokens_per_s"] > 0 and r["loss"] == r["loss"] for r in result["rows"])
    assert result["anchors"] == [] and "anchor" not in stdout  # no anchor was measured for 2.6B
    small = tmp_path / "small.json"
    stdout = _run("gpu_throughput.py", "--smoke", "--stock", "dense", "--backends", "sdpa", "--separations", "none",
                  "--objectives", "text-code", "--no-check-loss", "--output", str(small))
    anchors = json.loads(small.read_text())["anchors"]
    assert [(a["case"], a["anchor_tokens_per_s"], a["same_card"]) for a in anchors] == [
        ("pangu-100m/stock/dense", 150e3, False)]
    assert "not comparable" in stdout and "anchor    150000 tok/s" in stdout
