"""Evaluation prompts and the incremental prompts of paper §3.4.

A benchmark prompt stops right after ``[python]`` and the signature, in the two sample formats of
:mod:`megatron_t2c.mrpt.formats`::

    pangu       [descr] description [python] signature
    pycodegpt   [sos] signature [descr] description [python]

Incremental prompts add, for each problem, one prompt per proper prefix of the reference body: the
first ``i`` logical lines of the body (``i = 1 .. lines-1``; ``i = 0`` is the ordinary prompt and the full
body is left out) appended to the signature, normalised.  A prefix ends where the next reference line's
text would start, so it carries the ``[indent]`` or *all* the ``[dedent]`` s leading to that line's
level: a drop of two levels gives ``[dedent] [dedent]`` (the paper's release emitted a single
``[dedent]``, so the model continued at the wrong level).  Each prefix is therefore a string prefix of
``normalise(function)``.  Task ids are ``<task id>#<i>``, e.g. ``HumanEval/0#3``.

:attr:`IncrementalPrompt.rest` is the remainder of the reference (its lines ``i+1 ..``) as source with
four spaces per level: ``denormalise(prompt.code) + prompt.rest`` is the reference function again (the
same AST), which is what the tests check.
"""

from __future__ import annotations

from typing import NamedTuple

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.formats import FORMATS, Segment, sample_text
from megatron_t2c.mrpt.normalise import logical_lines, normalise, split_signature

_DESCR, _PYTHON, _SOS = (Segment(m, True) for m in (st.DESCR, st.PYTHON, st.SOS))


def format_prompt(description: str, code: str, fmt: str = "pangu") -> tuple[Segment, ...]:
    """Prompt segments for normalised ``code`` (a signature, possibly followed by a body prefix).

    PanGu: ``[descr] description [python] code``; PyCodeGPT: ``[sos] header [descr] description
    [python] body`` (``header``/``body`` from :func:`split_signature`; the body segment is left out when
    empty, so a bare signature gives a prompt ending in ``[python]``).
    """
    if fmt == "pangu":
        return (_DESCR, Segment(description), _PYTHON, Segment(code))
    if fmt == "pycodegpt":
        header, body = split_signature(code)
        segments = (_SOS, Segment(header), _DESCR, Segment(description), _PYTHON)
        return segments + (Segment(body),) if body else segments
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


class FunctionLines(NamedTuple):
    """A function's logical lines with their indentation levels and where each starts in its normalised text."""

    texts: list[str]  # logical line texts (as in normalise)
    levels: list[int]  # indentation level of each line, 0 for the first
    starts: list[int]  # offset of each line's text in ``normalised``
    header_lines: int  # lines up to and including the ``def``/``class`` line (decorators first)
    normalised: str  # normalise(source)


def function_lines(source: str) -> FunctionLines:
    """Split a function's source into logical lines, levels and offsets, mirroring :func:`normalise`."""
    lines = logical_lines(source.replace("\r\n", "\n").replace("\r", "\n"))
    if not lines:
        raise ValueError("no code")
    out: list[str] = []
    length = 0  # length of " ".join(out)
    texts, levels, starts = [], [], []
    stack = [lines[0].column]

    def emit(piece: str) -> None:
        nonlocal length
        length += len(piece) + (1 if out else 0)
        out.append(piece)

    for line in lines:
        col = line.column
        if col > stack[-1]:
            stack.append(col)
            emit(st.INDENT)
        while col < stack[-1]:
            stack.pop()
            emit(st.DEDENT)
            if not stack or col > stack[-1]:
                raise ValueError(f"inconsistent dedent at offset {line.start}")
        texts.append(line.text)
        levels.append(len(stack) - 1)
        starts.append(length + (1 if out else 0))
        emit(line.text)
        emit(st.NEW_LINE)
    for _ in range(len(stack) - 1):
        emit(st.DEDENT)
    normalised = " ".join(out)
    assert normalised == normalise(source), "function_lines disagrees with normalise"
    header = next((i for i, t in enumerate(texts) if not t.startswith("@")), 0) + 1
    return FunctionLines(texts, levels, starts, header, normalised)


class IncrementalPrompt(NamedTuple):
    """One incremental prompt: the signature plus the first ``index`` logical lines of the reference body."""

    task_id: str  # "<base task id>#<index>"
    base_task_id: str
    index: int  # number of reference body lines in the prompt (1 .. body lines - 1)
    description: str
    code: str  # normalised signature + body prefix, ending with the markers that lead to the next line
    rest: str  # the remaining reference lines as source, four spaces per level

    def prompt(self, fmt: str = "pangu") -> tuple[Segment, ...]:
        """The prompt segments in ``fmt``."""
        return format_prompt(self.description, self.code, fmt)

    def text(self, fmt: str = "pangu") -> str:
        """The prompt as one string."""
        return sample_text(self.prompt(fmt))


def incremental_prompts(task_id: str, description: str, function_source: str,
                        indent: str = "    ") -> list[IncrementalPrompt]:
    """The incremental prompts of one problem whose reference function (signature + body) is given."""
    fl = function_lines(function_source)
    first_body = fl.header_lines
    body_count = len(fl.texts) - first_body
    prompts = []
    for i in range(1, body_count):
        nxt = first_body + i
        code = fl.normalised[:fl.starts[nxt]].rstrip(" ")
        rest = "".join(indent * level + text + "\n" for level, text in zip(fl.levels[nxt:], fl.texts[nxt:]))
        prompts.append(IncrementalPrompt(f"{task_id}#{i}", task_id, i, description, code, rest))
    return prompts
