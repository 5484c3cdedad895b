"""Corpus-scale runs (issue 9): several ranks (local, mpiexec, srun-style env), resume, streaming, memory.

The single-process output is the truth: every multi-rank or resumed run must give the same bytes.
"""

import filecmp
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from megatron_t2c.data import corpus_ranks
from megatron_t2c.data.corpus_extraction import ExtractConfig, extract_corpus
from megatron_t2c.data.dedup import KeySet
from megatron_t2c.data.preprocess import PreprocessConfig, preprocess
from megatron_t2c.data.source_files import discover, stdlib_root
from helpers.stdlib_corpus import stdlib_extraction
from helpers.t2c_data import tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXTRACT = [sys.executable, str(REPO / "tools" / "extract_functions.py")]
PREPROCESS = [sys.executable, str(REPO / "tools" / "preprocess_data.py")]
#: Fields of a report or summary that describe how a run went, not what it produced.
RUN_FIELDS = {"seconds", "files_per_s", "functions_per_s", "docs_per_s", "tokens_per_s", "workers", "ranks",
              "shards"}
#: A part of the standard library for the faster tests: a few hundred files.
SUBSET = ("email", "json", "http", "logging", "concurrent", "importlib", "xml", "urllib", "wsgiref", "html",
          "multiprocessing", "asyncio")


def _mpi_ok() -> str:
    if not (BIN / "mpiexec").exists():
        return "no mpiexec next to the interpreter (pip install 'megatron_t2c[mpi]')"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'megatron_t2c[mpi]')"
    return ""


needs_mpi = pytest.mark.skipif(bool(_mpi_ok()), reason=_mpi_ok() or "mpi")


def _mpiexec(n: int) -> list[str]:
    return [str(BIN / "mpiexec"), "-n", str(n)]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_", "HYDRA_")) and
           k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "T2C_RUN_ID")}
    env.update(extra)
    return env


def _run(cmd, **kwargs):
    kwargs.setdefault("env", _clean_env())
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _same(report: dict, other: dict) -> None:
    a = {k: v for k, v in report.items() if k not in RUN_FIELDS}
    b = {k: v for k, v in other.items() if k not in RUN_FIELDS}
    assert a == b


def _same_files(a: Path, b: Path, suffixes) -> None:
    for suffix in suffixes:
        assert filecmp.cmp(f"{a}{suffix}", f"{b}{suffix}", shallow=False), suffix


@pytest.fixture(scope="module")
def subset_tree(tmp_path_factory) -> Path:
    """SUBSET of the standard library plus duplicates that land in shards of different ranks."""
    root = tmp_path_factory.mktemp("subset") / "tree"
    std = stdlib_root()
    for name in SUBSET:
        shutil.copytree(std / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # "zz" sorts last: exact copies of early files and a file repeating an early function
    (root / "zz").mkdir()
    shutil.copy(root / "email" / "base64mime.py", root / "zz" / "copy_of_base64mime.py")
    shutil.copy(root / "json" / "decoder.py", root / "zz" / "copy_of_decoder.py")
    source = (root / "email" / "quoprimime.py").read_text()
    header = re.search(r"^def header_length\(.*?(?=^def )", source, re.S | re.M).group(0)
    (root / "zz" / "repeats_a_function.py").write_text(header)
    return root


def _extract(paths, out: Path, **kwargs) -> dict:
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    config = ExtractConfig(paths=[str(p) for p in paths], output=str(out / "f.jsonl"),
                           report=str(out / "r.json"), rejected_list=str(out / "rej.tsv"), **kwargs)
    return extract_corpus(config)


def _extract_cli(paths, out: Path, *args, launcher=(), env=None):
    return _run(list(launcher) + EXTRACT + [*map(str, paths), "--output", str(out / "f.jsonl"), "--report",
                                            str(out / "r.json"), "--rejected-list", str(out / "rej.tsv"),
                                            "--no-progress", *map(str, args)], env=env or _clean_env())


def _same_extraction(a: Path, b: Path) -> None:
    for name in ("f.jsonl", "rej.tsv"):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    _same(json.loads((a / "r.json").read_text()), json.loads((b / "r.json").read_text()))


# --- extraction ------------------------------------------------------------------------------------------

def test_duplicates_spread_across_ranks_are_removed_exactly_once(subset_tree, tmp_path):
    single = _extract([subset_tree], tmp_path / "single")
    files = discover([subset_tree])
    position = {f.name: i for i, f in enumerate(files)}
    pairs = [("email/base64mime.py", "zz/copy_of_base64mime.py"), ("json/decoder.py", "zz/copy_of_decoder.py"),
             ("email/quoprimime.py", "zz/repeats_a_function.py")]
    # a shard size that puts every original and its copy in shards of different ranks
    shard_files = next(n for n in range(8, 64)
                       if all((position[a] // n) % 2 != (position[b] // n) % 2 for a, b in pairs))
    report = _extract([subset_tree], tmp_path / "ranks", ranks=2, shard_files=shard_files)
    _same_extraction(tmp_path / "single", tmp_path / "ranks")
    assert report["ranks"] == 2 and report["shards"] == -(-len(files) // shard_files)
    assert report["rejected"]["duplicate"] == single["rejected"]["duplicate"] >= 2
    rejected = dict(line.split("\t")[:2] for line in (tmp_path / "ranks" / "rej.tsv").read_text().splitlines())
    assert rejected["zz/copy_of_base64mime.py"] == rejected["zz/copy_of_decoder.py"] == "duplicate"
    assert "email/base64mime.py" not in rejected and "json/decoder.py" not in rejected
    records = [json.loads(line) for line in (tmp_path / "ranks" / "f.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == report["records"]
    assert not any(r["path"] == "zz/repeats_a_function.py" for r in records)  # its one function was seen
    assert report["duplicates_dropped"] >= 1
    manifest = json.loads((tmp_path / "ranks" / "f.jsonl.shards" / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == list(range(report["shards"]))
    assert {s["rank"] for s in manifest["shards"]} == {0, 1}
    assert sum(s["files"] for s in manifest["shards"]) == report["files_seen"]
    assert sorted(os.listdir(tmp_path / "ranks" / "f.jsonl.shards")) == ["manifest.json", "plan.json"]


def test_inputs_from_lists_and_patterns(subset_tree, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# the JSON package, then two files by pattern\n" + str(subset_tree / "json") + "\n"
                       + str(subset_tree / "html" / "*.py") + "\n")
    report = _extract([], tmp_path / "a", files_from=str(listing))
    expected = discover([subset_tree / "json"]) + discover(sorted((subset_tree / "html").glob("*.py")))
    assert report["files_seen"] == len(expected) > 5
    again = _extract([subset_tree / "json", str(subset_tree / "html" / "*.py")], tmp_path / "b")
    assert (tmp_path / "a" / "f.jsonl").read_bytes() == (tmp_path / "b" / "f.jsonl").read_bytes()
    assert again["files_seen"] == report["files_seen"]
    with pytest.raises(FileNotFoundError, match="pattern without matches"):
        _extract([str(subset_tree / "nothing*.py")], tmp_path / "c")


def test_standard_library_single_vs_local_ranks_vs_mpiexec(tmp_path):
    """The whole standard library: 1 process (2 workers) == 2 local ranks == mpiexec -n 2, byte for byte."""
    out, single, _ = stdlib_extraction()
    (tmp_path / "single").mkdir()
    for a, b in (("functions.jsonl", "f.jsonl"), ("rejected.tsv", "rej.tsv"), ("report.json", "r.json")):
        shutil.copy(out / a, tmp_path / "single" / b)
    runs = {"ranks": ["--ranks", 2]}
    if not _mpi_ok():
        runs["mpiexec"] = []
    for name, args in runs.items():
        launcher = _mpiexec(2) if name == "mpiexec" else ()
        _extract_cli([], tmp_path / name, "--workers", 1, "--shard-files", 64, *args, launcher=launcher)
        _same_extraction(tmp_path / "single", tmp_path / name)
        assert json.loads((tmp_path / name / "r.json").read_text())["ranks"] == 2
    if _mpi_ok():
        pytest.skip(f"mpiexec case not run: {_mpi_ok()}")


def test_srun_environment_runs_two_ranks_with_a_file_barrier(subset_tree, tmp_path):
    """What srun sets (SLURM_PROCID, SLURM_NTASKS, a step id): two processes, one output."""
    _extract([subset_tree], tmp_path / "single")
    job = str(uuid.uuid4().int % 10**8)
    out = tmp_path / "srun"
    cmd = EXTRACT + [str(subset_tree), "--output", str(out / "f.jsonl"), "--report", str(out / "r.json"),
                     "--rejected-list", str(out / "rej.tsv"), "--no-progress", "--workers", "1",
                     "--shard-files", "32"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_clean_env(SLURM_PROCID=str(r), SLURM_NTASKS="2", SLURM_STEP_ID="0",
                                             SLURM_JOB_ID=job))
             for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "files:" in outs[0][0] and outs[1][0] == ""  # rank 0 reports
    _same_extraction(tmp_path / "single", out)
    assert not (out / "f.jsonl.shards" / ".sync").exists()


def test_world_detection(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_")) or name in ("RANK", "WORLD_SIZE", "T2C_RUN_ID",
                                                                            "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(name)
    assert corpus_ranks.detect_world().size == 1
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert corpus_ranks.detect_world().size == 1  # the batch script itself, not an srun step
    monkeypatch.setenv("SLURM_STEP_ID", "7")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    world = corpus_ranks.detect_world()
    assert (world.rank, world.size, world.launcher, world.run_id) == (3, 4, "slurm", "slurm-123.7")
    assert corpus_ranks.detect_world("none").size == 1
    for name in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="T2C_RUN_ID"):
        corpus_ranks.detect_world()
    monkeypatch.setenv("T2C_RUN_ID", "job42")
    world = corpus_ranks.detect_world()
    assert (world.rank, world.size, world.launcher, world.run_id) == (1, 2, "env", "job42")


def test_keyset_is_an_exact_set():
    import random

    rng = random.Random(0)
    for width in (1, 2):
        keys = [rng.getrandbits(64 * width) for _ in range(5000)]
        keys += keys[:1000] + [0, 0, 1 << (64 * width - 1)]
        ks, reference = KeySet(width, capacity=1), set()
        for k in keys:
            assert ks.add(k) == (k not in reference)
            reference.add(k)
        assert len(ks) == len(reference) and all(k in ks for k in reference)
        assert (12345 in ks) == (12345 in reference)
        assert ks.nbytes() <= len(ks) * (1 + 8 * width) / 0.35  # load factor at least 0.35


def _kill_midway(cmd, shard_dir: Path, pattern: str, at_least: int, env=None) -> None:
    """Start ``cmd`` in its own process group and SIGKILL the group once ``at_least`` shards are done."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env or _clean_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(shard_dir.glob(pattern))) < at_least:
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_extraction_killed_midway_resumes_to_the_same_bytes(subset_tree, tmp_path):
    _extract([subset_tree], tmp_path / "single")
    out = tmp_path / "resumed"
    args = ["--workers", 1, "--ranks", 2, "--shard-files", 6, "--resume", "--keep-shards"]
    cmd = EXTRACT + [str(subset_tree), "--output", str(out / "f.jsonl"), "--report", str(out / "r.json"),
                     "--rejected-list", str(out / "rej.tsv"), "--no-progress", *map(str, args)]
    shards = out / "f.jsonl.shards"
    _kill_midway(cmd, shards, "*.done.json", 6)
    assert not (out / "f.jsonl").exists()
    before = {p.name: p.read_bytes() for p in shards.glob("*.done.json")}
    _run(cmd)
    _same_extraction(tmp_path / "single", out)
    after = {p.name: p.read_bytes() for p in shards.glob("*.done.json")}
    assert all(after[name] == data for name, data in before.items())  # completed shards were not redone
    assert len(after) > len(before)
    assert not [p for p in shards.iterdir() if ".tmp" in p.name]


# --- preprocessing ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return str(tiny_tokenizer("bpe"))


@pytest.fixture(scope="module")
def stdlib_records_path():
    return stdlib_extraction()[0] / "functions.jsonl"


def _pp_args(inputs, prefix, model, *extra, include="all"):
    return ["--input", *map(str, inputs), "--tokenizer-model", model, "--output-prefix", str(prefix),
            "--include", include, "--summary", f"{prefix}.summary.json", "--index-map", f"{prefix}.lines",
            "--no-progress", *map(str, extra)]


def _same_dataset(a: Path, b: Path) -> None:
    _same_files(a, b, (".bin", ".idx", ".lines"))
    sa, sb = (json.loads(Path(f"{p}.summary.json").read_text()) for p in (a, b))
    for key in ("bin", "idx", "index_map"):
        sa.pop(key), sb.pop(key)
    _same(sa, sb)


def _pp(src, prefix, model, include="all", **kwargs):
    kwargs.setdefault("workers", 1)
    return preprocess(PreprocessConfig(input=str(src), tokenizer_model=model, output_prefix=str(prefix),
                                       include=include, progress=False, summary=f"{prefix}.summary.json",
                                       index_map=f"{prefix}.lines", **kwargs), log=None)


def test_standard_library_dataset_single_vs_local_ranks_vs_mpiexec(tmp_path, model, stdlib_records_path):
    src = stdlib_records_path  # every line is read and parsed; the text-code pairs are encoded
    _pp(src, tmp_path / "single", model, "text-code")
    _pp(src, tmp_path / "workers2", model, "text-code", workers=2)
    summary = _pp(src, tmp_path / "ranks", model, "text-code", ranks=2, shard_bytes=4 << 20)
    names = ["workers2", "ranks"]
    if not _mpi_ok():
        _run(_mpiexec(2) + PREPROCESS + _pp_args([src], tmp_path / "mpiexec", model, "--workers", 1,
                                                 "--shard-bytes", 4 << 20, include="text-code"))
        names.append("mpiexec")
    for name in names:
        _same_dataset(tmp_path / "single", tmp_path / name)
    assert summary["ranks"] == 2 and summary["shards"] > 4
    assert summary["lines"] == summary["documents"] + sum(summary["skipped"].values())
    if _mpi_ok():
        pytest.skip(f"mpiexec case not run: {_mpi_ok()}")


def test_partitioned_compressed_inputs_give_the_single_file_dataset(tmp_path, model, stdlib_records_path):
    """A glob of .jsonl.gz and .jsonl shards (with bad lines) == the same lines in one file."""
    lines = stdlib_records_path.read_bytes().splitlines(keepends=True)[:3000]
    lines.insert(700, b"not json\n")
    lines.insert(2100, b'{"docstring": "no code"}\n')
    (tmp_path / "one.jsonl").write_bytes(b"".join(lines))
    parts = tmp_path / "parts"
    parts.mkdir()
    cuts = [0, 500, 1200, 2000, len(lines)]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        data = b"".join(lines[a:b])
        if i % 2:
            (parts / f"part{i}.jsonl").write_bytes(data)
        else:
            with gzip.open(parts / f"part{i}.jsonl.gz", "wb") as fh:
                fh.write(data)
    one = preprocess(PreprocessConfig(input=str(tmp_path / "one.jsonl"), tokenizer_model=model,
                                      output_prefix=str(tmp_path / "one"), include="all", progress=False,
                                      index_map=str(tmp_path / "one.lines")), log=None)
    for name, kwargs in (("glob", {}), ("glob_ranks", {"ranks": 2, "shard_bytes": 200_000})):
        summary = preprocess(PreprocessConfig(input=[str(parts / "part*")], tokenizer_model=model,
                                              output_prefix=str(tmp_path / name), include="all", progress=False,
                                              index_map=str(tmp_path / f"{name}.lines"), **kwargs), log=None)
        _same_files(tmp_path / "one", tmp_path / name, (".bin", ".idx", ".lines"))
        assert [i["lines"] for i in summary["inputs"]] == [b - a for a, b in zip(cuts, cuts[1:])]
        assert [(b["input"], b["line"], b["reason"]) for b in summary["first_bad_lines"]] == [
            (str(parts / "part1.jsonl"), 201, "invalid_json"), (str(parts / "part3.jsonl"), 101, "missing_field:code")]
        assert summary["skipped"] == one["skipped"] and summary["documents"] == one["documents"]
    assert summary["shards"] > 4


def test_preprocess_killed_midway_resumes_to_the_same_bytes(tmp_path, model, stdlib_records_path):
    src = tmp_path / "records.jsonl"
    src.write_bytes(b"".join(stdlib_records_path.read_bytes().splitlines(keepends=True)[:8000]))
    _pp(src, tmp_path / "single", model)
    prefix = tmp_path / "resumed"
    cmd = PREPROCESS + _pp_args([src], prefix, model, "--workers", 1, "--ranks", 2, "--shard-bytes", 1 << 18,
                                "--resume", "--keep-shards")
    shards = Path(f"{prefix}.shards")
    _kill_midway(cmd, shards, "*.done.json", 4)
    assert not Path(f"{prefix}.bin").exists()
    before = {p.name: p.read_bytes() for p in shards.glob("*.done.json")}
    _run(cmd)
    _same_dataset(tmp_path / "single", prefix)
    after = {p.name: p.read_bytes() for p in shards.glob("*.done.json")}
    assert all(after[name] == data for name, data in before.items()) and len(after) > len(before)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert [s["input"] for s in manifest["shards"]] == [str(src)] * len(after)
    # a resume with other options refuses the old shards
    bad = subprocess.run(PREPROCESS + _pp_args([src], prefix, model, "--ranks", 2, "--resume",
                                               "--max-seq-length", 77), capture_output=True, text=True,
                         cwd=REPO, env=_clean_env())
    assert bad.returncode == 1 and "different run (changed: max_seq_length, shard_bytes)" in bad.stderr


# --- memory ----------------------------------------------------------------------------------------------

_RSS = """
import json, sys
sys.path.insert(0, {repo!r})
from megatron_t2c.{module} import {config}, {func}
{func}({config}(**json.loads(sys.argv[1])){extra})
# VmHWM: this process image's peak RSS (ru_maxrss would also count the forked parent's before exec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def _peak_rss_kib(module: str, config: str, func: str, kwargs: dict, extra: str = "") -> int:
    code = _RSS.format(repo=str(REPO), module=module, config=config, func=func, extra=extra)
    done = _run([sys.executable, "-c", code, json.dumps(kwargs)])
    return int(done.stdout.split()[-1])


def test_peak_memory_is_flat_in_corpus_size(subset_tree, tmp_path, model):
    """10 renamed copies of a corpus (10x the files, records and documents) vs one copy."""
    names = ("json", "http", "urllib", "html", "wsgiref", "concurrent")
    for copies in (1, 10):
        root = tmp_path / f"x{copies}"
        for c in range(copies):
            for name in names:
                for path in (subset_tree / name).rglob("*.py"):
                    target = root / f"c{c}" / path.relative_to(subset_tree)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    text = path.read_text(encoding="utf-8", errors="surrogateescape")
                    text = re.sub(r"\b(def|class)(\s+)(\w+)", rf"\1\2\3_c{c}", text)
                    target.write_text(text + f"\n# copy {c}\n",
                                      encoding="utf-8", errors="surrogateescape")
    rss, reports = {}, {}
    for copies in (1, 10):
        out = tmp_path / f"out{copies}"
        kwargs = {"paths": [str(tmp_path / f"x{copies}")], "output": str(out / "f.jsonl"),
                  "report": str(out / "r.json"), "workers": 1, "progress": False}
        rss["extract", copies] = _peak_rss_kib("data.corpus_extraction", "ExtractConfig", "extract_corpus", kwargs)
        reports[copies] = json.loads((out / "r.json").read_text())
        kwargs = {"input": str(out / "f.jsonl"), "tokenizer_model": model, "output_prefix": str(out / "d"),
                  "include": "all", "progress": False, "index_map": str(out / "d.lines")}
        rss["preprocess", copies] = _peak_rss_kib("data.preprocess", "PreprocessConfig", "preprocess", kwargs,
                                                  ", log=None")
    assert reports[10]["files_kept"] == 10 * reports[1]["files_kept"]
    assert reports[10]["records"] == 10 * reports[1]["records"] > 5_000
    for stage in ("extract", "preprocess"):
        assert rss[stage, 10] <= 1.10 * rss[stage, 1], (stage, rss)
