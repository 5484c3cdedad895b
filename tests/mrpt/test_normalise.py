"""Whitespace normalisation: the tokenizer's structure, the exact inverse, and the whole standard library."""

import ast
import random
import tokenize
import warnings

import pytest

from megatron_t2c.mrpt.normalise import denormalise, logical_lines, normalise, split_signature
from megatron_t2c.data.source_files import discover
from helpers.normalise_reference import reference_normalise
from helpers.stdlib_corpus import stdlib_extraction


def same_ast(a: str, b: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))


def test_nested_blocks_give_one_dedent_per_level():
    code = "def f(x):\n    if x:\n        for i in x:\n            y = i\n    return y\n"
    assert normalise(code) == (
        "def f(x): [new_line] [indent] if x: [new_line] [indent] for i in x: [new_line] [indent] y = i "
        "[new_line] [dedent] [dedent] return y [new_line] [dedent]")
    assert denormalise(normalise(code)) == code


def test_continuations_become_one_space_and_comments_and_blank_lines_vanish():
    code = ("def f(a,\n      b):  # header\n\n    # only a comment\n    return a + \\\n        b\n")
    assert normalise(code) == "def f(a, b): [new_line] [indent] return a + b [new_line] [dedent]"
    assert same_ast(denormalise(normalise(code)), code)


def test_whitespace_inside_string_literals_is_kept_exactly():
    code = 'def f():\n    s = """a\n\tb  \n  c"""\n    t = \'x  #  y\'\n    return s, t\n'
    text = normalise(code)
    assert '"""a\n\tb  \n  c"""' in text and "'x  #  y'" in text
    back = denormalise(text)
    assert same_ast(back, code)
    assert ast.literal_eval(ast.parse(back).body[0].body[0].value) == "a\n\tb  \n  c"


def test_tabs_crlf_and_form_feeds_follow_the_tokenizer():
    code = "class A:\r\n\tdef m(self):\r\n\t\treturn 1\r\n\f\r\n\tx = 2\r\n"
    assert normalise(code) == ("class A: [new_line] [indent] def m(self): [new_line] [indent] return 1 "
                               "[new_line] [dedent] x = 2 [new_line] [dedent]")
    assert same_ast(denormalise(normalise(code)), code.replace("\r\n", "\n"))


def test_marker_text_in_code_cannot_be_mistaken_for_a_marker():
    code = "def f(a, indent, s='[dedent]'):\n    return a[indent] + s + '[new_line]'\n"
    text = normalise(code)
    assert "a[ indent]" in text and "'[dedent]'" in text and "'[new_line]'" in text
    back = denormalise(text)
    assert same_ast(back, code)
    assert "s='[dedent]'" in back


def test_one_line_bodies_semicolons_and_decorators():
    code = "@dec(lambda x: x)\ndef f(): return 1; pass\n"
    assert normalise(code) == "@dec(lambda x: x) [new_line] def f(): return 1; pass [new_line]"
    assert split_signature(normalise(code)) == ("@dec(lambda x: x) [new_line] def f():", "return 1; pass [new_line]")


def test_split_signature_joins_back_to_the_code():
    for code in ["def f(x: dict[str, int] = {'a': 1}) -> int:\n    return x\n",
                 "class A(B, metaclass=M):\n    x = 1\n",
                 "async def g(s=':'):\n    await s\n"]:
        text = normalise(code)
        header, body = split_signature(text)
        assert header + " " + body == text
        assert header.endswith(":") and body.startswith("[new_line] [indent]")
    assert split_signature("x = 1 [new_line]") == ("x = 1 [new_line]", "")


def test_malformed_code_is_reported_not_guessed():
    with pytest.raises(ValueError, match="unbalanced"):
        logical_lines("f(a,\n")
    with pytest.raises(ValueError, match="unterminated"):
        logical_lines("s = 'abc\n")
    with pytest.raises(ValueError, match="indentation"):
        normalise("if x:\n        a\n    b\n")


def test_denormalise_tolerates_generated_text():
    # stray dedents and an unterminated string (a truncated generation) do not raise; a marker after
    # an unclosed quote still ends the line
    text = "return 1 [new_line] [dedent] [dedent] x = 'abc [new_line] y"
    assert denormalise(text) == "return 1\nx = 'abc\ny\n"


def test_matches_the_tokenize_module_on_standard_library_files():
    files = discover([])
    sample = random.Random(0).sample(files, 150)
    checked = 0
    for f in sample:
        try:
            with tokenize.open(f.path) as fh:
                source = fh.read()
            reference = reference_normalise(source)
        except (SyntaxError, UnicodeDecodeError, tokenize.TokenError, IndentationError):
            continue
        assert normalise(source) == reference, f.path
        checked += 1
    assert checked > 120


def test_every_standard_library_function_round_trips_to_the_same_ast():
    _, _, records = stdlib_extraction()
    assert len(records) > 50_000
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in records:
            if normalise(r["code"]) != r["normalised"]:
                failures.append((r["path"], r["name"], "normalised field differs"))
            elif ast.dump(ast.parse(denormalise(r["normalised"]))) != ast.dump(ast.parse(r["code"])):
                failures.append((r["path"], r["name"], "AST differs"))
    assert failures == []
