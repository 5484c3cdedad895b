"""Extraction: filters with named reasons, tree-sitter records, dedup, accounting, workers and the CLI."""

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from megatron_t2c.data.corpus_extraction import ALL_REASONS, ExtractConfig, extract_corpus
from megatron_t2c.data.extraction import extract_records
from megatron_t2c.mrpt.normalise import denormalise, normalise
from megatron_t2c.data.source_files import Rejected, decode
from helpers.stdlib_corpus import stdlib_extraction

REPO = Path(__file__).resolve().parents[2]

GOOD = '''\
"""Module docstring: not part of any record."""
import functools


def plain(a, b=2):
    """Add two numbers.

    Args:
        a: the first.
    """
    # a comment line
    return a + b  # trailing comment


@functools.lru_cache(maxsize=None)
@staticmethod
async def fetch(url: str, *, retries: int = 3) -> bytes:
    """Fetch a URL."""
    async with session() as s:
        return await s.get(url)


def outer(x):
    def inner(y):
        return y * 2
    return inner(x)


class Base(object):
    """A base class."""

    attr = f"{1 + 1:>3}"

    def method(self, items):
        text = """
keep this line
    and this indentation
"""
        return [i for i in items if i], text

    @property
    def prop(self): "One-line docstring."; return self.attr


class OnlyDoc:
    """Nothing but a docstring."""


def uses_markers(a, indent):
    return a[indent], "[dedent] stays in a string"


def no_doc_one_line(x): return x  # comment
'''


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path):
    """A small corpus with one file for each filter and the awkward cases the paper's data had."""
    root = tmp_path / "corpus"
    write(root / "good.py", GOOD)
    write(root / "pkg" / "copy_of_good.py", GOOD)  # duplicate bytes
    write(root / "pkg" / "tabs_crlf.py", b"class T:\r\n\tdef m(self):\r\n\t\t# c\r\n\t\treturn 1\r\n")
    write(root / "pkg" / "latin1.py", "# -*- coding: latin-1 -*-\ndef cafe():\n    return 'caf\xe9'\n"
          .encode("latin-1"))
    write(root / "pkg" / "not_utf8.py", b"def f():\n    return '\xff\xfe'\n")
    write(root / "py2.py", 'def main():\n    print "hello"\n')
    write(root / "long_line.py", "x = '" + "a" * 1000 + "'\n")
    write(root / "long_average.py", "".join(f"v{i} = '{'b' * 110}'\n" for i in range(20)))
    write(root / "big.py", "x = 1\n" * 170_000)  # 1,020,000 bytes
    write(root / "empty.py", "")
    write(root / "same_function.py", "def outer(x):\n    def inner(y):\n        return y * 2\n    return inner(x)\n")
    write(root / "notes.txt", "not python")
    return root


def run(tree: Path, tmp_path: Path, workers: int = 1) -> tuple[dict, list[dict], str]:
    out = tmp_path / f"out{workers}"
    config = ExtractConfig(paths=[str(tree)], output=str(out / "f.jsonl"), report=str(out / "r.json"),
                           rejected_list=str(out / "rejected.tsv"), workers=workers, progress=False)
    report = extract_corpus(config)
    records = [json.loads(line) for line in (out / "f.jsonl").read_text(encoding="utf-8").splitlines()]
    assert json.loads((out / "r.json").read_text()) == report
    return report, records, (out / "rejected.tsv").read_text(encoding="utf-8")


def test_every_file_is_kept_or_rejected_with_its_reason(tree, tmp_path):
    report, records, rejected = run(tree, tmp_path)
    assert report["files_seen"] == 11  # notes.txt is not a *.py file
    assert report["files_kept"] == 5  # good, tabs_crlf, latin1, empty, same_function
    expected = {"duplicate": 1, "undecodable": 1, "not_python3": 1, "long_line": 1,
                "long_average_line": 1, "too_large": 1}
    assert {k: v for k, v in report["rejected"].items() if v} == expected
    assert set(report["rejected"]) == set(ALL_REASONS)
    assert report["files_seen"] == report["files_kept"] + sum(report["rejected"].values())
    lines = dict(line.split("\t")[:2] for line in rejected.splitlines())
    assert lines == {"pkg/copy_of_good.py": "duplicate", "pkg/not_utf8.py": "undecodable",
                     "py2.py": "not_python3", "long_line.py": "long_line",
                     "long_average.py": "long_average_line", "big.py": "too_large"}
    # same_function.py repeats outer() and inner() of good.py: both dropped once, as duplicates
    assert report["duplicates_dropped"] == 2 and report["records_rejected"] == 0
    assert report["records"] == len(records) == len({r["id"] for r in records})
    assert report["text_code"] == sum(r["docstring"] is not None for r in records)
    assert report["code_only"] == report["records"] - report["text_code"]


def test_records_have_the_documented_fields_and_content(tree, tmp_path):
    _, records, _ = run(tree, tmp_path)
    by_name = {(r["path"], r["name"]): r for r in records}
    assert set(records[0]) == {"id", "path", "kind", "name", "signature", "docstring", "code", "normalised"}

    plain = by_name["good.py", "plain"]
    assert plain["kind"] == "function"
    assert plain["signature"] == "def plain(a, b=2):"
    assert plain["docstring"] == "Add two numbers.\n\nArgs:\n    a: the first."
    assert plain["code"] == "def plain(a, b=2):\n    return a + b\n"

    fetch = by_name["good.py", "fetch"]
    assert fetch["signature"] == "async def fetch(url: str, *, retries: int = 3) -> bytes:"
    assert fetch["code"].startswith("@functools.lru_cache(maxsize=None)\n@staticmethod\nasync def fetch(")
    assert fetch["docstring"] == "Fetch a URL."

    assert by_name["good.py", "inner"]["kind"] == "function"
    assert by_name["good.py", "inner"]["code"] == "def inner(y):\n    return y * 2\n"
    assert by_name["good.py", "Base"]["kind"] == "class"
    assert by_name["good.py", "method"]["kind"] == "method"
    # a line inside a multi-line string keeps its exact text while the method is dedented to column 0
    method = by_name["good.py", "method"]["code"]
    assert method.startswith("def method(self, items):\n    text = \"\"\"\nkeep this line\n    and this indentation\n")
    prop = by_name["good.py", "prop"]
    assert prop["docstring"] == "One-line docstring."
    assert prop["code"] == "@property\ndef prop(self): return self.attr\n"
    only_doc = by_name["good.py", "OnlyDoc"]
    assert only_doc["code"] == "class OnlyDoc:\n    pass\n" and only_doc["docstring"] == "Nothing but a docstring."
    assert by_name["good.py", "no_doc_one_line"]["code"] == "def no_doc_one_line(x): return x\n"
    assert by_name["good.py", "uses_markers"]["normalised"] == (
        'def uses_markers(a, indent): [new_line] [indent] return a[ indent], "[dedent] stays in a string" '
        "[new_line] [dedent]")
    # the f-string class attribute is code, not a docstring, and survives
    assert 'attr = f"{1 + 1:>3}"' in by_name["good.py", "Base"]["code"]

    tabs = by_name["pkg/tabs_crlf.py", "m"]
    assert tabs["code"] == "def m(self):\n\treturn 1\n" and "\r" not in tabs["code"]
    assert by_name["pkg/latin1.py", "cafe"]["code"] == "def cafe():\n    return 'caf\xe9'\n"


def test_every_record_is_valid_python_without_comments_or_docstrings(tree, tmp_path):
    _, records, _ = run(tree, tmp_path)
    for r in records:
        module = ast.parse(r["code"])
        assert len(module.body) == 1
        definition = module.body[0]
        assert definition.name == r["name"]
        if r["docstring"] is not None:
            assert ast.get_docstring(definition) is None
        assert "comment" not in r["code"] and "Module docstring" not in r["code"]  # every comment says "comment"
        assert normalise(r["code"]) == r["normalised"]
        assert ast.dump(ast.parse(denormalise(r["normalised"]))) == ast.dump(module)


def test_output_does_not_depend_on_the_number_of_workers(tree, tmp_path):
    one = run(tree, tmp_path, workers=1)
    two = run(tree, tmp_path, workers=2)
    assert (tmp_path / "out1" / "f.jsonl").read_bytes() == (tmp_path / "out2" / "f.jsonl").read_bytes()
    assert one[2] == two[2]
    strip = ("seconds", "files_per_s", "functions_per_s", "workers")
    assert {k: v for k, v in one[0].items() if k not in strip} == {k: v for k, v in two[0].items() if k not in strip}


def test_python2_bytes_docstrings_and_fstrings_are_told_apart():
    with pytest.raises(Rejected) as info:
        extract_records("exec 'x = 1'\n", "py2.py")
    assert info.value.reason == "not_python3"
    records = extract_records('def f():\n    b"bytes"\n    return 1\n\ndef g():\n    f"{x}"\n', "x.py")
    assert [r.docstring for r in records] == [None, None]
    records = extract_records('def h():\n    "con" \'cat\'\n    return 2\n', "x.py")
    assert records[0].docstring == "concat" and records[0].code == "def h():\n    return 2\n"


def test_pep263_decoding():
    assert decode("# coding: cp1252\nx = '\u20ac'\n".encode("cp1252")) == "# coding: cp1252\nx = '\u20ac'\n"
    assert decode(b"\xef\xbb\xbfx = 1\r\n") == "x = 1\n"  # BOM, CRLF
    with pytest.raises(Rejected) as info:
        decode(b"# coding: no-such-codec\nx = 1\n")
    assert info.value.reason == "undecodable"


def test_cli_end_to_end_and_errors(tree, tmp_path):
    tool = [sys.executable, str(REPO / "tools" / "extract_functions.py")]
    help_text = subprocess.run(tool + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "--workers" in help_text and "--rejected-list" in help_text and "examples:" in help_text
    out = tmp_path / "cli.jsonl"
    done = subprocess.run(tool + [str(tree / "good.py"), str(tree / "pkg"), "--output", str(out),
                                  "--no-progress", "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "files: 5 seen, 3 kept" in done.stdout
    assert len(out.read_text().splitlines()) > 10
    missing = subprocess.run(tool + [str(tmp_path / "nope"), "--output", str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


def test_a_crash_leaves_no_partial_output(tree, tmp_path, monkeypatch):
    out = tmp_path / "keep.jsonl"
    out.write_text("previous\n")
    import megatron_t2c.data.corpus_extraction as ec

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ec._Tally, "add", boom)
    with pytest.raises(KeyboardInterrupt):
        extract_corpus(ExtractConfig(paths=[str(tree)], output=str(out), workers=1, progress=False))
    assert out.read_text() == "previous\n"
    assert sorted(os.listdir(tmp_path)) == ["corpus", "keep.jsonl"]


def test_standard_library_is_fully_accounted_for():
    out, report, records = stdlib_extraction()
    assert report["files_seen"] > 1500
    assert report["files_seen"] == report["files_kept"] + sum(report["rejected"].values())
    assert report["rejected"]["cleaning_failed"] == 0 and report["rejected"]["internal_error"] == 0
    assert report["records_rejected"] == 0
    assert report["records"] == len(records) > 50_000
    assert report["text_code"] > 8_000
    rejected = (out / "rejected.tsv").read_text().splitlines()
    assert len(rejected) == sum(report["rejected"].values())
    assert any(line.startswith("lib2to3/tests/data/py2_test_grammar.py\tnot_python3") for line in rejected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in records:
            ast.parse(r["code"])  # every record is valid Python
