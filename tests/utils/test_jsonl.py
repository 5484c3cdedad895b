"""The JSON-lines resume reader: torn last line reported and cut, bad lines raised or listed, .gz read."""

from __future__ import annotations

import gzip

import pytest

from megatron_t2c.utils.jsonl import JsonlError, read_jsonl


def test_torn_last_line_is_reported_and_cut_on_repair(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3, "b')
    got = read_jsonl(path)
    assert [(n, r["a"]) for n, r in got.records] == [(1, 1), (3, 2)] and got.torn_line == 4 and got.blank == 1
    assert "line 4 is torn" in capsys.readouterr().err
    assert path.read_bytes().endswith(b'"b')  # reading alone never changes the file
    read_jsonl(path, repair=True)
    assert path.read_bytes() == b'{"a": 1}\n\n{"a": 2}\n'
    with open(path, "a") as fh:  # a stage appends after the last complete record
        fh.write('{"a": 4}\n')
    assert [r["a"] for _, r in read_jsonl(path).records] == [1, 2, 4]


def test_complete_last_line_without_newline_gets_one(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    got = read_jsonl(path, repair=True, quiet=True)
    assert not got.torn and [r["a"] for _, r in got.records] == [1, 2]
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'


def test_bad_lines_raise_or_are_listed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"a": 1}\n[1, 2]\nnot json\n\xff\xfe\n{"a": 5}\n')
    with pytest.raises(JsonlError, match=r"c.jsonl:2: not a JSON record \(not_an_object\)"):
        read_jsonl(path)
    got = read_jsonl(path, strict=False)
    assert got.bad == [(2, "not_an_object"), (3, "invalid_json"), (4, "invalid_utf8")]
    assert [n for n, _ in got.records] == [1, 5]
    assert read_jsonl(tmp_path / "missing.jsonl").records == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl", missing_ok=False)


def test_gzip_is_read_not_repaired(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"a": 1}\n{"a"')
    got = read_jsonl(path, repair=True, quiet=True)
    assert [r["a"] for _, r in got.records] == [1] and got.torn_line == 2
