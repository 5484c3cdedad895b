"""The analysis tools and the run report: embedding neighbourhoods (t-SNE), checkpoint correlation,
contamination check, and ``report.md`` over a real (tiny) run directory.

The run directory is built once: a 4-step MAPT and a 2-step MRPT (``code`` objective, partial separation,
``--init-from`` the MAPT checkpoint) trained on the stdlib fixture dataset, with TensorBoard logs, plus
hand-written evaluation summaries, statistics, an HF ``verify.json`` and timings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.training_runs import tiny_run

FMT = "pycodegpt"


# ---------------------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------------------

def _argv(prefix: str, tokenizer: str, out: Path, **flags) -> list[str]:
    """pretrain_t2c.py flags of a tiny run (helpers.training_runs.TINY, 4 steps, checkpoints and TensorBoard)."""
    return tiny_run((prefix, tokenizer), FMT, out, cache=out.parent / "cache", **{
        "train_iters": 4, "save": str(out / "checkpoints"), "tensorboard_dir": str(out / "tensorboard"),
        "eval_interval": 2, "eval_iters": 1, **flags})


def _pretrain(args: list[str]) -> dict:
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain

    return pretrain(parse_run_config(args))


def _tool(name: str):
    """A command-line script of tools/ as a module (its main(argv) runs in this process)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _summary(**values) -> dict:
    base = {"samples": 20, "passed": 0, "failed": 20, "timed_out": 0, "problems": 20, "incremental_prompts": 0,
            "incremental_problems": 0, "problems_in_task": 164}
    return {**base, **values}


STATISTICS = {
    "extraction": {"files_seen": 8, "files_kept": 8, "rejected": {"duplicate": 0}, "records": 587,
                   "text_code": 300, "code_only": 287, "duplicates_dropped": 0},
    "tokenizer": {"model_type": "bpe", "vocab_size": 1500, "records": 587, "seconds": 1.0},
    "datasets": {"pycodegpt_all": {"documents": 587, "tokens": 81234, "mean_tokens": 138.4, "max_tokens": 900,
                                   "format": "pycodegpt", "include": "all", "skipped": {}}},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import corpus_jsonl, tiny_tokenizer

    prefix, tokenizer = indexed_dataset(FMT), str(tiny_tokenizer("bpe"))
    run = tmp_path_factory.mktemp("run")
    mapt = run / "train" / "mapt"
    _pretrain(_argv(prefix, tokenizer, mapt, hidden_dropout=0.0))
    _pretrain(_argv(prefix, tokenizer, run / "train" / "mrpt_code_partial", train_iters=2, separation="partial",
                    objective="code", init_from=str(mapt / "checkpoints")))
    (run / "data").mkdir()
    shutil.copy(corpus_jsonl(), run / "data" / "functions.jsonl")
    _write(run / "summary.json", STATISTICS)
    (run / "summary.md").write_text("# Data pipeline summary\n", encoding="utf-8")
    ev = run / "eval"
    _write(ev / "mapt" / "humaneval" / "greedy.summary.json", _summary(**{"pass@1": 0.0}))
    _write(ev / "mrpt_code_partial" / "humaneval" / "greedy.summary.json", _summary(**{"pass@1": 0.0125}))
    _write(ev / "mrpt_code_partial" / "humaneval" / "sampled.summary.json",
           _summary(**{"pass@1": 0.02, "pass@10": 0.15, "samples": 200}))
    _write(ev / "mrpt_code_partial" / "mbpp" / "incremental.summary.json",
           _summary(**{"incremental_pass@1": 0.25, "incremental_per_prompt_pass@1": 0.2, "problems": 0,
                       "incremental_prompts": 40, "incremental_problems": 8, "problems_in_task": 500}))
    _write(run / "hf" / "mrpt_code_partial" / "verify.json",
           {"max_abs_diff": 3.1e-6, "top1_agreement": 1.0, "tolerance": 1e-4, "positions": 192, "ok": True})
    _write(run / "timings.json", {"extract functions": 12.5, "mapt": 30.0})
    return run


def _ckpt(run_dir: Path, name: str) -> str:
    return str(run_dir / "train" / name / "checkpoints")


# ---------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------

def _brute_force(space: np.ndarray, query: int, candidates: np.ndarray, k: int) -> list[int]:
    unit = space / np.linalg.norm(space, axis=1, keepdims=True)
    sims = unit[candidates] @ unit[query]
    order = sorted(range(len(candidates)), key=lambda i: (-sims[i], candidates[i]))
    return [int(candidates[i]) for i in order if candidates[i] != query][:k]


def test_direct_read_matches_the_loaded_model(run_dir):
    from megatron_t2c.analysis import embedding_spaces as embeddings

    base, code, info = embeddings.read_tables(_ckpt(run_dir, "mrpt_code_partial"))
    base_m, code_m, _ = embeddings.read_tables_via_model(_ckpt(run_dir, "mrpt_code_partial"))
    assert info["separation"] == "partial" and code.shape == (len(info["separated_ids"]), 64)
    np.testing.assert_array_equal(base[:info["vocab_size"]], base_m[:info["vocab_size"]])
    np.testing.assert_array_equal(code, code_m)


def test_neighbours_in_both_spaces(run_dir):
    from megatron_t2c.analysis import embedding_spaces as embeddings

    mapt = embeddings.load_spaces(_ckpt(run_dir, "mapt"))
    result = embeddings.neighbours(mapt, ["open", "join", "def", "split", "no_such_piece_xyz"], k=20)
    assert result["same_spaces"] and result["missing"] == ["no_such_piece_xyz"]
    assert [e["word"] for e in result["tokens"]] == ["open", "join", "def", "split"]
    candidates = embeddings.candidate_ids(mapt.pieces)
    for e in result["tokens"]:
        assert e["piece"] in (e["word"], "\u2581" + e["word"]) and not e["separated"]
        doc = [n["id"] for n in e["docstring"]]
        assert len(doc) == 20 and e["id"] not in doc
        assert doc == _brute_force(mapt.docstring, e["id"], candidates, 20)
        assert e["code"] == e["docstring"] and e["shared_neighbours"] == 20  # no separation: one space
        cosines = [n["cosine"] for n in e["docstring"]]
        assert cosines == sorted(cosines, reverse=True)

    partial = embeddings.load_spaces(_ckpt(run_dir, "mrpt_code_partial"))
    separated = np.array(partial.separated)
    others = np.setdiff1d(np.arange(partial.vocab_size), separated)
    np.testing.assert_array_equal(partial.code[others], partial.docstring[others])  # the model's rule
    result = embeddings.neighbours(partial, ["open", "join", "def", "split"], k=20)
    assert all(e["separated"] for e in result["tokens"])  # grammar words: partial separation's own set
    moved = 0
    for e in result["tokens"]:
        assert [n["id"] for n in e["code"]] == _brute_force(partial.code, e["id"], candidates, 20)
        moved += not np.array_equal(partial.code[e["id"]], partial.docstring[e["id"]])
    assert moved >= 1  # code rows trained apart from their base rows by the code objective


def test_plot_embeddings_cli_and_determinism(run_dir, tmp_path):
    from megatron_t2c.analysis import embedding_spaces as embeddings


    _tool("plot_embeddings").main([_ckpt(run_dir, "mapt"), "--output-prefix", str(tmp_path / "mapt"),
                              "--tokens", "def", "split", "--neighbours", "8", "--per-token"])
    for name in ("mapt.png", "mapt_def.png", "mapt_split.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "mapt.json").read_text())
    assert [len(e["docstring"]) for e in saved["tokens"]] == [8, 8] and saved["same_spaces"]
    rows = embeddings.load_spaces(_ckpt(run_dir, "mapt")).docstring[:30]
    np.testing.assert_array_equal(embeddings._tsne(rows, 0), embeddings._tsne(rows, 0))


# ---------------------------------------------------------------------------------------------------
# Checkpoint correlation
# ---------------------------------------------------------------------------------------------------

HAND = {"iter_200": {"humaneval": 0.05, "mbpp_dev": 0.10, "mbpp_test": 0.08},
        "iter_1000": {"humaneval": 0.12, "mbpp_dev": 0.16, "mbpp_test": 0.17},
        "iter_400": {"humaneval": 0.07, "mbpp_dev": 0.09, "mbpp_test": 0.10},
        "iter_600": {"humaneval": 0.09, "mbpp_dev": 0.15, "mbpp_test": 0.12},
        "iter_800": {"humaneval": 0.08, "mbpp_dev": 0.13, "mbpp_test": 0.14}}


def test_correlation_matches_numpy_and_handles_constant_series():
    from megatron_t2c.analysis import checkpoint_correlation as correlation

    result = correlation.correlation_matrix(HAND)
    assert result["testsets"] == ["humaneval", "mbpp_dev", "mbpp_test"]
    assert result["checkpoints"] == ["iter_200", "iter_400", "iter_600", "iter_800", "iter_1000"]
    data = np.array([[HAND[c][t] for c in result["checkpoints"]] for t in result["testsets"]])
    np.testing.assert_allclose(np.array(result["pearson"], dtype=float), np.corrcoef(data), atol=1e-12)
    assert result["n"] == [[5] * 3] * 3 and not result["notes"]

    table = {c: dict(v, tiny=0.0) for c, v in HAND.items()}
    del table["iter_200"]["mbpp_dev"]
    result = correlation.correlation_matrix(table)
    tiny = result["testsets"].index("tiny")
    assert all(r is None for r in result["pearson"][tiny]) and result["constant_series"] == ["tiny"]
    assert any("tiny" in note and "constant" in note for note in result["notes"])
    dev, test = result["testsets"].index("mbpp_dev"), result["testsets"].index("mbpp_test")
    assert result["n"][dev][test] == 4  # pairwise: the checkpoints that have both
    shared = ["iter_400", "iter_600", "iter_800", "iter_1000"]
    expected = np.corrcoef([HAND[c]["mbpp_dev"] for c in shared], [HAND[c]["mbpp_test"] for c in shared])[0, 1]
    assert result["pearson"][dev][test] == pytest.approx(expected)
    assert "undefined" in correlation.format_markdown(result)
    assert correlation.pearson([0.1], [0.2]) == (None, "1 shared checkpoint(s): need at least 2")
    assert correlation.mbpp_split_of("MBPP/511") == "mbpp_dev" and correlation.mbpp_split_of(510) == "mbpp_test"


def test_correlation_cli_reads_both_layouts(tmp_path):

    root = tmp_path / "eval"
    for ckpt, values in HAND.items():
        _write(root / ckpt / "humaneval" / "greedy.summary.json", {"pass@1": values["humaneval"]})
        _write(root / ckpt / "mbpp_test.summary.json", {"pass@1": values["mbpp_test"]})
    specs = [f"{c}:mbpp_dev=" + str(_write(tmp_path / f"{c}.json", {"pass@1": v["mbpp_dev"]}))
             for c, v in HAND.items()]
    _tool("checkpoint_correlation").main(["--root", str(root), "--summary", *specs,
                                          "--output", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")])
    result = json.loads((tmp_path / "c.json").read_text())
    from megatron_t2c.analysis import checkpoint_correlation as correlation

    np.testing.assert_allclose(result["pearson"], correlation.correlation_matrix(HAND)["pearson"], atol=1e-12)
    assert "| Pearson r (n) | humaneval | mbpp_dev | mbpp_test |" in (tmp_path / "c.md").read_text()


def test_correlation_averaged_across_models(tmp_path):
    """Table 4: each model's r per pair and their mean over the models that define it."""
    second = {c: {"humaneval": v["humaneval"] ** 2, "mbpp_dev": 0.3 - v["mbpp_dev"], "mbpp_test": v["mbpp_test"]}
              for c, v in HAND.items()}
    flat = {c: dict(v, mbpp_dev=0.1) for c, v in HAND.items()}  # mbpp_dev constant: undefined for this model
    for name, table in (("a", HAND), ("b", second), ("c", flat)):
        for ckpt, values in table.items():
            for testset, value in values.items():
                _write(tmp_path / name / ckpt / testset / "greedy.summary.json", {"pass@1": value})
    _tool("checkpoint_correlation").main(["--runs", *(f"{n}={tmp_path / n}" for n in "abc"),
                                          "--output", str(tmp_path / "avg.json"), "--markdown", str(tmp_path / "avg.md")])
    result = json.loads((tmp_path / "avg.json").read_text())
    avg = result["average"]
    names = avg["testsets"]
    he, dev, test = (names.index(t) for t in ("humaneval", "mbpp_dev", "mbpp_test"))

    def r(table, x, y):
        cks = sorted(table)
        return np.corrcoef([table[c][x] for c in cks], [table[c][y] for c in cks])[0, 1]

    assert avg["pearson"][he][test] == pytest.approx(np.mean([r(t, "humaneval", "mbpp_test")
                                                              for t in (HAND, second, flat)]))
    assert avg["models"][he][test] == 3 and avg["models"][he][dev] == 2
    assert avg["pearson"][he][dev] == pytest.approx(np.mean([r(HAND, "humaneval", "mbpp_dev"),
                                                             r(second, "humaneval", "mbpp_dev")]))
    assert result["average"]["per_model"]["c"]["humaneval~mbpp_dev"] is None
    text = (tmp_path / "avg.md").read_text()
    assert "| **average** |" in text and "| c |" in text and "undefined" in text


# ---------------------------------------------------------------------------------------------------
# Contamination
# ---------------------------------------------------------------------------------------------------

def _planted_corpus(tmp_path: Path) -> tuple[Path, str, str]:
    """The clean fixture corpus plus two planted records: a docstring that is HumanEval/2's description
    re-wrapped, and a code field that is HumanEval/7's reference re-indented with tabs, with a comment."""
    from helpers.t2c_data import stdlib_records
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval

    problems = {p.task_id: p for p in load_humaneval()}
    words = problems["HumanEval/2"].description.split()
    rewrapped = "\n    ".join(" ".join(words[i:i + 5]) for i in range(0, len(words), 5)) + "\n"
    code = problems["HumanEval/7"].function.replace("    ", "\t") + "  # a comment\n"
    planted = [dict(id="planted-doc", path="x.py", kind="function", name="f", signature="def f():",
                    docstring=rewrapped, code="def f():\n    pass\n"),
               dict(id="planted-code", path="y.py", kind="function", name="g", signature="def g():",
                    docstring=None, code=f"class Holder:\n{code}")]
    path = tmp_path / "functions.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for record in list(stdlib_records()[:200]) + planted + list(stdlib_records()[200:]):
            fh.write(json.dumps(record) + "\n")
    return path, "HumanEval/2", "HumanEval/7"


def test_contamination_finds_planted_matches_and_nothing_else(tmp_path):
    from megatron_t2c.analysis import contamination
    from helpers.t2c_data import corpus_jsonl

    probes, problems, notes = contamination.benchmark_probes(["humaneval"])
    assert problems == {"humaneval": 164} and len(probes) == 328 and not notes
    clean = contamination.check([("clean", contamination.iter_jsonl_texts(str(corpus_jsonl())))], probes, problems)
    assert clean["benchmarks"]["humaneval"]["contaminated_problems"] == 0
    assert clean["sources"]["clean"]["texts"] > 500

    path, doc_problem, code_problem = _planted_corpus(tmp_path)

    _tool("contamination").main(["--functions", str(path), "--benchmarks", "humaneval", "--output",
                            str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")])
    report = json.loads((tmp_path / "c.json").read_text())["benchmarks"]["humaneval"]
    assert report["contaminated_problems"] == 2
    pairs = {(m["problem"], m["probe"], m["id"], m["field"], m["line"]) for m in report["matches"]}
    assert pairs == {(doc_problem, "description", "planted-doc", "docstring", 201),
                     (code_problem, "code", "planted-code", "code", 202)}
    assert report["problem_ids"] == {"description": [doc_problem], "code": [code_problem]}
    assert "planted-doc" in (tmp_path / "c.md").read_text()


def test_probe_index_edges():
    from megatron_t2c.analysis.contamination import Probe, ProbeIndex, nonws

    probes = [Probe("b", "p1", "description", nonws("Return the sum of a list of numbers.")),
              Probe("b", "p2", "description", "short")]
    index = ProbeIndex(probes, k=8, min_chars=10)
    assert index.skipped == [1]
    key = probes[0].key
    for text in (key, "x" + key, key + "y", "abc" * 7 + key + "def" * 5):
        assert index.search(text) == {0}, text
    assert index.search(key[:-1]) == set() and index.search("short" * 10) == set()


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------

def test_report_of_a_run(run_dir):

    _tool("make_report").main([str(run_dir), "--mbpp-path", str(run_dir / "no-mbpp.jsonl")])
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "near zero" in text and "could not be built" not in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| MAPT") or line.startswith("| MRPT")}
    assert rows["MAPT (`mapt`)"][:3] == ["text-code", "none", "0.00"]
    # HumanEval: pass@1 greedy 1.25, pass@10 sampled 15.00, pass@100 -, incremental -; MBPP: incremental only
    assert rows["MRPT (`mrpt_code_partial`)"] == ["code", "partial", "1.25", "15.00", "–", "–", "–",
                                                  "–", "–", "–", "25.00", "20.00"]
    assert "| `mrpt_code_partial` | MBPP | incremental | 20 | 0 of 500 | 40 |" in text
    assert "MBPP incr. pass@1 per prompt" in text and "micro" not in text and "macro" not in text
    assert (run_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "![training curves](training_curves.png)" in text and "(tensorboard)" in text
    assert "| `mapt` | mapt | text-code | none | 4 |" in text
    assert "### Corpus" in text and "| pycodegpt_all | pycodegpt | all | 587 | 81234 |" in text
    for name in ("mapt", "mrpt_code_partial"):
        assert (run_dir / f"embeddings_{name}.png").exists() and f"![embeddings {name}]" in text
    assert "| `mrpt_code_partial` | 1 | 3.1e-06 | 0.0001 | 100.00% | 192 | OK |" in text
    assert "| humaneval | 164 | 0 | 0 | 0 |" in text and "mbpp not checked" in text
    assert "| **total** | **42.5** |" in text
    assert "2 layers, hidden size 64" in text


def test_report_tolerates_partial_runs(tmp_path, run_dir):
    from megatron_t2c.analysis.report import build_report

    empty = tmp_path / "empty"
    empty.mkdir()
    result = build_report(str(empty))
    text = Path(result["report"]).read_text()
    assert set(result["sections"].values()) == {"ok"} and text.count("not run") >= 8

    partial = tmp_path / "partial"
    unfinished = partial / "train" / "mrpt_corrupt_code_full"
    unfinished.mkdir(parents=True)
    (unfinished / "log.jsonl").write_text('{"step": 1, "loss": 7.5}\n{"step": 2, "loss": 7.25}\n{"step": 3, "lo')
    (unfinished / "checkpoints").mkdir()
    _write(partial / "eval" / "mapt" / "humaneval" / "greedy.summary.json", {"pass@1": 0.0})
    (partial / "eval" / "mapt" / "mbpp").mkdir(parents=True)
    (partial / "eval" / "mapt" / "mbpp" / "greedy.summary.json").write_text("{broken")
    (partial / "summary.json").write_text("not json")
    (partial / "hf" / "mapt").mkdir(parents=True)
    result = build_report(str(partial), embeddings=False, contamination=False)
    text = Path(result["report"]).read_text()
    assert set(result["sections"].values()) == {"ok"}
    assert "| MRPT (`mrpt_corrupt_code_full`) | corrupt-code | full |" in text
    assert "| `mrpt_corrupt_code_full` | mrpt | corrupt-code | full | 2 | 7.500 | 7.250 | – | – | not run |" in text
    assert "without a complete checkpoint" in text and "(log.jsonl)" in text
    assert "| `mapt` | 0 | – | – | – | – | not verified |" in text


@pytest.mark.parametrize("name", ["plot_embeddings", "checkpoint_correlation", "contamination", "make_report"])
def test_every_tool_has_help_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tool(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"tools/{name}.py" in out and "--config" in out
