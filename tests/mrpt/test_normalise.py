"""Whitespace normalisation: the tokenizer's structure, the exact inverse, and the whole standard library."""

import ast
import random
import sys
import sysconfig
import tokenize
import warnings
from pathlib import Path

import pytest

from megatron_t2c.mrpt.normalise import _string_end, denormalise, logical_lines, normalise, split_signature
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


# ---------------------------------------------------------------------------------------------------
# PEP 701 f-strings (Python 3.12+): read on any Python, given here as text
# ---------------------------------------------------------------------------------------------------

PEP701 = sys.version_info >= (3, 12)  # where such code also compiles, so its AST can be compared

# (literal, what follows it on the line): the literal's extent is exactly the first element
F_STRING_EXTENTS = [
    ('f"{d["key"]}"', ' + "tail"'),  # a nested string with the same quotes
    ("f'{x['a']!r:>{w}}'", " + 'tail'"),  # conversion, format spec with a nested field
    ('f"{f"{f"{1}"}"}"', ' + "tail"'),  # nested f-strings, all with the same quote
    ('f"{a!=b}"', ' + "tail"'),  # != is an operator, not a conversion
    ('f"{ {1: "x"}[1] }"', ' + "tail"'),  # a dict display: its ':' is inside brackets
    ('f"{x:{"a"}>10}"', ' + "tail"'),  # a string inside a nested field of the format spec
    ('f"{{"', ' + "}}"'),  # a doubled brace is literal text, not a field: the quote closes the f-string
    ('f"\\N{EM DASH} {x}"', ' + "tail"'),  # a named escape, not a field
    ('rf"\\"{x}"', ' + "tail"'),  # raw: the backslash still keeps the quote inside
    ('f"\\{x["k"]}"', ' + "tail"'),  # a backslash before a brace: the brace opens a field
    ('F"{x}"', ' "{" + "tail"'),  # the plain literal after it is a separate token with its own rules
    ('f"""{x:\n}"""', ' + "tail"'),  # a line break in the format spec of a triple-quoted f-string
    ('f"{", ".join([\n    "a",  # the first\n    "b"])}"', ' + "tail"'),  # line breaks and a comment in a field
    ('t"{x["a"]}"', ' + "tail"'),  # PEP 750 template strings share the grammar
]


@pytest.mark.parametrize("literal, tail", F_STRING_EXTENTS)
def test_f_string_extent_follows_pep_701(literal, tail):
    source = "x = " + literal + tail + "\n"
    quote = 4 + min(literal.index(q) for q in "'\"" if q in literal)
    assert _string_end(source, quote) == 4 + len(literal)
    lines = logical_lines(source)
    assert len(lines) == 1 and lines[0].text == "x = " + literal + tail
    if PEP701 and not literal.startswith("t"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # the invalid escape of backslash-brace, on purpose
            compile(source, "<pep701>", "exec")


def test_pep_701_f_strings_normalise_and_round_trip_on_any_python():
    code = ('def report(items, d, width):\n'
            '    """Lines of a report."""\n'
            '    head = f"{d["title"]:^{width}}"  # same quotes in the field\n'
            '    body = f"{", ".join([\n'
            '        f"{item["name"]!r}",  # a comment inside the field\n'
            '        "[new_line]",\n'
            '    ])}"\n'
            '    if d["[indent]"]:\n'
            '        return head\n'
            '    return head + body\n')
    text = normalise(code)
    # one logical line per statement: the f-string with its line breaks and comment is one literal, kept
    # exactly, marker text inside it included
    assert text == (
        'def report(items, d, width): [new_line] [indent] """Lines of a report.""" [new_line] '
        'head = f"{d["title"]:^{width}}" [new_line] '
        'body = f"{", ".join([\n        f"{item["name"]!r}",  # a comment inside the field\n'
        '        "[new_line]",\n    ])}" [new_line] '
        'if d["[indent]"]: [new_line] [indent] return head [new_line] [dedent] return head + body [new_line] '
        '[dedent]')
    back = denormalise(text)
    assert back == code.replace("  # same quotes in the field", "")
    assert split_signature(text)[0] == "def report(items, d, width):"
    if PEP701:
        assert same_ast(back, code)


def test_marker_text_in_a_nested_same_quote_string_is_neither_escaped_nor_a_marker():
    code = 'x = a[indent] + f"{d["[dedent]"]}"\n'
    text = normalise(code)
    assert text == 'x = a[ indent] + f"{d["[dedent]"]}" [new_line]'
    assert denormalise(text) == 'x = a[ indent] + f"{d["[dedent]"]}"\n'


def test_split_signature_skips_pep_701_f_strings_in_defaults():
    text = normalise('def f(s=f"{x["):"]}", t=1) -> str:\n    return s\n')
    assert split_signature(text) == ('def f(s=f"{x["):"]}", t=1) -> str:',
                                     "[new_line] [indent] return s [new_line] [dedent]")


@pytest.mark.parametrize("code", ['x = f"{d["a"]\n', 'x = f"{x:>10"\n', 'x = f"abc\n', "x = f'''{y}\n",
                                  'x = f"{a  # c\n', "x = 1 \\ 2\n"])
def test_malformed_f_strings_are_reported(code):
    with pytest.raises(ValueError):
        logical_lines(code)


@pytest.mark.skipif(not PEP701, reason="the tokenize reference reads PEP 701 f-strings from Python 3.12")
def test_matches_the_tokenize_module_on_the_f_string_tests_of_this_python():
    path = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_fstring.py"
    if not path.exists():
        pytest.skip(f"{path} is not installed")
    with tokenize.open(path) as fh:
        source = fh.read()
    assert normalise(source) == reference_normalise(source)
    assert same_ast(denormalise(normalise(source)), source)
