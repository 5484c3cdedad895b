"""Incremental prompts (paper §3.4) on hand-written functions: prefixes, dedents, round trip (no execution)."""

import ast

import pytest

from megatron_t2c.mrpt.formats import sample_text
from megatron_t2c.evaluation.prompts import format_prompt, function_lines, incremental_prompts
from megatron_t2c.mrpt.normalise import denormalise, normalise

NESTED = '''def f(xs):
    total = 0
    for x in xs:
        if x > 0:
            total += x
    return total
'''


def test_multi_level_dedent_gives_one_dedent_per_level():
    prompts = incremental_prompts("T/0", "Sum the positives.", NESTED)
    assert [p.index for p in prompts] == [1, 2, 3, 4]  # 5 body lines, the full body excluded
    assert [p.task_id for p in prompts] == ["T/0#1", "T/0#2", "T/0#3", "T/0#4"]
    assert prompts[0].code == "def f(xs): [new_line] [indent] total = 0 [new_line]"
    assert prompts[1].code.endswith("for x in xs: [new_line] [indent]")
    # after "total += x" the next line is two levels out: two [dedent]s, not one
    assert prompts[2].code.endswith("if x > 0: [new_line] [indent]")
    assert prompts[3].code.endswith("total += x [new_line] [dedent] [dedent]")
    assert prompts[3].rest == "    return total\n"
    for p in prompts:
        assert normalise(NESTED).startswith(p.code)
        rebuilt = denormalise(p.code) + p.rest
        assert ast.dump(ast.parse(rebuilt)) == ast.dump(ast.parse(NESTED))


def test_three_level_dedent_and_odd_indentation():
    src = "def g(a):\n  if a:\n     while a:\n       if a > 3:\n         a -= 2\n       a -= 1\n  return a\n"
    prompts = incremental_prompts("T/1", "d", src)
    ends = {p.index: p.code.split("[new_line]")[-1].split() for p in prompts}
    assert ends[4] == ["[dedent]"]  # "a -= 2" -> "a -= 1"
    assert ends[5] == ["[dedent]", "[dedent]"]  # "a -= 1" -> "return a": two levels out
    tabs = "def g(a):\n\tif a:\n\t\twhile a:\n\t\t\ta -= 1\n\treturn a\n"
    tab_prompts = incremental_prompts("T/1t", "d", tabs)
    assert tab_prompts[-1].code.endswith("a -= 1 [new_line] [dedent] [dedent]")
    for p in tab_prompts:
        assert ast.dump(ast.parse(denormalise(p.code) + p.rest)) == ast.dump(ast.parse(tabs))
    for p in prompts:
        assert ast.dump(ast.parse(denormalise(p.code) + p.rest)) == ast.dump(ast.parse(src))


def test_function_lines_levels():
    fl = function_lines(NESTED)
    assert fl.levels == [0, 1, 1, 2, 3, 1]
    assert fl.header_lines == 1
    assert fl.normalised == normalise(NESTED)
    for text, start in zip(fl.texts, fl.starts):
        assert fl.normalised[start:start + len(text)] == text


def test_decorators_multiline_header_and_strings():
    src = '@dec\ndef h(a,\n      b):\n    s = """two\n  lines"""\n    if a:\n        return s\n    return b\n'
    prompts = incremental_prompts("T/2", "d", src)
    assert [p.index for p in prompts] == [1, 2, 3]  # decorator and two-line header are the signature
    assert prompts[0].code.startswith("@dec [new_line] def h(a, b): [new_line] [indent] s = ")
    for p in prompts:
        assert ast.dump(ast.parse(denormalise(p.code) + p.rest)) == ast.dump(ast.parse(src))


def test_no_prompts_for_one_line_or_inline_bodies():
    assert incremental_prompts("T/3", "d", "def f():\n    return 1\n") == []
    assert incremental_prompts("T/4", "d", "def f(): return 1\n") == []


def test_prompt_formats():
    code = "def f(xs): [new_line] [indent] total = 0 [new_line]"
    pangu = format_prompt("Sum.", code, "pangu")
    assert [(s.text, s.is_marker) for s in pangu] == [("[descr]", True), ("Sum.", False), ("[python]", True),
                                                        (code, False)]
    pyc = format_prompt("Sum.", code, "pycodegpt")
    assert [(s.text, s.is_marker) for s in pyc] == [("[sos]", True), ("def f(xs):", False), ("[descr]", True),
                                                      ("Sum.", False), ("[python]", True),
                                                      ("[new_line] [indent] total = 0 [new_line]", False)]
    assert sample_text(format_prompt("Sum.", "def f(xs):", "pycodegpt")) == "[sos] def f(xs): [descr] Sum. [python]"
    p = incremental_prompts("T/0", "Sum.", NESTED)[0]
    assert p.text("pangu") == "[descr] Sum. [python] " + p.code
    with pytest.raises(ValueError):
        format_prompt("d", code, "gpt")
