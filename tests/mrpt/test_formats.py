"""The PanGu-Coder and PyCodeGPT sample formats, on hand-written cases and on standard-library functions."""

import pytest

from megatron_t2c.mrpt import formats as F
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.normalise import normalise, split_signature
from helpers.t2c_data import stdlib_records

CODE = "def add(a, b):\n    # comment\n    return a + b\n"
DOC = "Add two\n    numbers.\n\n  Really.  "
NORM = "def add(a, b): [new_line] [indent] return a + b [new_line] [dedent]"


def test_normalised_fixture():
    assert normalise(CODE) == NORM


def test_pangu_text_code():
    segments = F.format_code(NORM, DOC, "pangu")
    assert F.sample_text(segments) == f"[descr] Add two numbers. Really. [python] {NORM} [eoc]"
    assert [s.is_marker for s in segments] == [True, False, True, False, True]


def test_pangu_code_only():
    assert F.sample_text(F.format_code(NORM, None, "pangu")) == f"[python] {NORM} [eoc]"


def test_pycodegpt_text_code():
    segments = F.format_code(NORM, DOC, "pycodegpt")
    assert F.sample_text(segments) == (
        "[sos] def add(a, b): [descr] Add two numbers. Really. [python] "
        "[new_line] [indent] return a + b [new_line] [dedent] [eoc]")
    assert [s.text for s in segments if s.is_marker] == ["[sos]", "[descr]", "[python]", "[eoc]"]


def test_pycodegpt_code_only():
    assert F.sample_text(F.format_code(NORM, None, "pycodegpt")) == (
        "[sos] def add(a, b): [python] [new_line] [indent] return a + b [new_line] [dedent] [eoc]")


def test_pycodegpt_signature_keeps_decorators():
    norm = normalise("@functools.cache\n@other(x=':')\ndef f(\n    x: int = 1,\n) -> dict[str, int]:\n    return {}\n")
    segments = F.format_code(norm, "Doc.", "pycodegpt")
    assert segments[1].text == "@functools.cache [new_line] @other(x=':') [new_line] def f( x: int = 1, ) -> dict[str, int]:"
    assert segments[5].text == "[new_line] [indent] return {} [new_line] [dedent]"


def test_blank_docstring_is_code_only():
    for doc in ("", "  \n\t ", None):
        assert F.format_code(NORM, doc, "pangu") == F.format_code(NORM, None, "pangu")
        assert not F.has_docstring({"docstring": doc})
    assert F.clean_docstring(" a\n\n b\t c ") == "a b c"


def test_included():
    pair, code_only = {"docstring": "x"}, {"docstring": None}
    assert F.included(pair, "text-code") and not F.included(code_only, "text-code")
    assert F.included(code_only, "code-only") and not F.included(pair, "code-only")
    assert F.included(pair, "all") and F.included(code_only, "all")
    with pytest.raises(ValueError):
        F.included(pair, "everything")


def test_bad_format_and_marker():
    with pytest.raises(ValueError, match="unknown format"):
        F.format_code(NORM, None, "codex")
    with pytest.raises(ValueError):
        F.marker("[new_line]")  # a whitespace marker is text, not a format marker
    assert F.marker("[eoc]") == F.Segment("[eoc]", True)


def test_record_code_prefers_precomputed_normalised():
    assert F.record_code({"code": CODE}) == NORM
    assert F.record_code({"code": "garbage (", "normalised": NORM}) == NORM
    assert F.format_record({"code": CODE, "docstring": None}) == F.format_code(NORM, None)


def test_marker_text_stays_inside_text_segments():
    segments = F.format_code("x = '[eoc]' [new_line]", "Returns [python] code.", "pangu")
    assert [s.text for s in segments if s.is_marker] == ["[descr]", "[python]", "[eoc]"]
    assert F.text_segments(segments) == ["Returns [python] code.", "x = '[eoc]' [new_line]"]


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_stdlib_samples(fmt):
    records = stdlib_records()
    assert len(records) > 300 and sum(F.has_docstring(r) for r in records) > 100
    for record in records:
        segments = F.format_record(record, fmt)
        text = F.sample_text(segments)
        norm = record["normalised"]
        doc = " ".join(record["docstring"].split()) if F.has_docstring(record) else None
        if fmt == "pangu":
            expected = (f"[descr] {doc} " if doc else "") + f"[python] {norm} [eoc]"
        else:
            header, body = split_signature(norm)
            assert header + " " + body == norm
            expected = f"[sos] {header} " + (f"[descr] {doc} " if doc else "") + f"[python] {body} [eoc]"
        assert text == expected
        markers = [s.text for s in segments if s.is_marker]
        assert markers[-1] == st.EOC and all(m in st.FORMAT_MARKERS for m in markers)
        assert all(s.text for s in segments if not s.is_marker)
