"""Whitespace normalisation of Python code to ``[new_line] [indent] [dedent]`` and its exact inverse.

Normalisation follows Python's tokenizer: every logical line ends with ``[new_line]`` (tokenize's
``NEWLINE``), an indentation increase gives ``[indent]`` and each level left gives one ``[dedent]`` (so a
drop of several levels gives several).  Blank lines and comments vanish; line breaks inside brackets and
backslash continuations (tokenize's ``NL``) become a single space; whitespace inside string literals,
newlines included, is kept exactly.  Tokens are separated by single spaces::

    def f(x):                 def f(x): [new_line] [indent] if x: [new_line] [indent] return [x,
        if x:           ->        1] [new_line] [dedent] [dedent]
            return [x,
                    1]

(without the line break, which is only there to fit this page).

:func:`denormalise` rebuilds source with four spaces per level; its AST equals the original's.  Marker
text that appears in code outside string literals (``a[indent]`` subscripts a variable called ``indent``)
is written ``a[ indent]`` so that it cannot be mistaken for a marker: the AST is unchanged.

The scanner is a single regular expression over the source (strings, comments, continuations and line
breaks) with bracket depth counted in the C-level gaps between matches, several times faster than the
``tokenize`` module; tests check it against ``tokenize`` on the whole standard library.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .special_tokens import DEDENT, INDENT, NEW_LINE

# A string literal from its opening quote (a prefix such as ``rb`` stays outside: only the extent
# matters here): triple- or single-quoted, escapes skip any character, newline included. Unrolled loops
# keep the engine linear on long literals.
_STRING = r"""
 (?: '''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''
   | \"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\"
   | '[^'\\\n]*(?:\\.[^'\\\n]*)*'
   | "[^"\\\n]*(?:\\.[^"\\\n]*)*"
 )"""
# One match per interesting item, with the plain text before it (no quote, comment, backslash or line
# break) consumed by a fast character-class loop: that gap is where brackets are counted.
_SCAN = re.compile(rf"""[^'"\#\\\n]*(?:(?P<s>{_STRING})|(?P<c>\#[^\n]*)|(?P<k>\\\n)|(?P<n>\n))""",
                   re.VERBOSE | re.DOTALL)
_MARKER_TEXT = re.compile(r"\[(new_line|indent|dedent)\]")
# string literals or marker text: markers inside strings are left alone
_MARKER_SCAN = re.compile(rf"(?P<s>{_STRING})|(?P<m>\[(?:new_line|indent|dedent)\])",
                          re.VERBOSE | re.DOTALL)


class LogicalLine(NamedTuple):
    """One logical line of source: where it starts and ends, its indentation column and its text."""

    line_start: int  # offset of the physical line it begins on (its indentation starts here)
    start: int  # offset of its first character (after the indentation)
    end: int  # offset just past its last character
    column: int  # indentation width, tabs to multiples of eight as the tokenizer counts them
    text: str  # the line with comments dropped and internal line breaks replaced by one space


def _column(indent: str) -> int:
    if "\t" not in indent and "\f" not in indent:
        return len(indent)
    col = 0
    for ch in indent:
        if ch == "\t":
            col = (col // 8 + 1) * 8
        elif ch == "\f":
            col = 0
        else:
            col += 1
    return col


def _bracket_delta(segment: str) -> int:
    return (segment.count("(") + segment.count("[") + segment.count("{")
            - segment.count(")") - segment.count("]") - segment.count("}"))


def logical_lines(source: str, multiline_strings: list[tuple[int, int]] | None = None) -> list[LogicalLine]:
    """Split ``source`` (with ``\\n`` line endings) into its logical lines, as Python's tokenizer does.

    ``multiline_strings``, when given, receives the (start, end) offsets of every string literal that
    spans lines.  Raises ``ValueError`` for unbalanced brackets or unterminated string literals.
    """
    lines: list[LogicalLine] = []
    pieces: list[str] = []  # text of the current logical line, split at breaks and comments
    line_start = 0  # offset where the current logical line's first physical line began
    piece_start = 0
    first = -1  # offset of the first character of the current logical line, -1 while blank
    last_end = 0  # offset just past the last content seen in the current logical line
    depth = 0
    cursor = 0
    for m in _SCAN.finditer(source):
        start = m.start()
        if start != cursor:  # the scanner skipped text: a quote that opens no complete literal
            raise ValueError(f"unterminated string literal near offset {cursor}")
        kind = m.lastgroup
        tok = m.start(kind)
        cursor = m.end()
        if tok > start:
            gap = source[start:tok]
            # _bracket_delta(gap), inlined: this runs once per line of every file
            depth += (gap.count("(") + gap.count("[") + gap.count("{")
                      - gap.count(")") - gap.count("]") - gap.count("}"))
            stripped = gap.rstrip()
            if stripped:
                if first < 0:
                    first = start + len(gap) - len(gap.lstrip())
                last_end = start + len(stripped)
        if kind == "s":
            if first < 0:
                first = tok
            last_end = cursor
            if multiline_strings is not None and "\n" in m.group("s"):
                multiline_strings.append((tok, cursor))
            continue
        # a comment, a backslash continuation or a line break ends the current piece
        pieces.append(source[piece_start:tok])
        piece_start = cursor
        if kind == "c" or kind == "k" or depth > 0:
            continue
        if first >= 0:  # a NEWLINE token: the logical line is complete
            lines.append(_finish(source, line_start, first, last_end, pieces))
            first = -1
        pieces = []
        line_start = cursor
    rest = source[cursor:]
    if "'" in rest or '"' in rest:
        raise ValueError(f"unterminated string literal near offset {cursor}")
    depth += _bracket_delta(rest)
    if depth != 0:
        raise ValueError("unbalanced brackets")
    stripped = rest.rstrip()
    if stripped:
        if first < 0:
            first = cursor + len(rest) - len(rest.lstrip())
        last_end = cursor + len(stripped)
    pieces.append(rest)
    if first >= 0:
        lines.append(_finish(source, line_start, first, last_end, pieces))
    return lines


def _finish(source: str, line_start: int, first: int, last_end: int, pieces: list[str]) -> LogicalLine:
    if len(pieces) == 1:
        text = pieces[0].strip()
    else:
        text = " ".join(p for p in (piece.strip() for piece in pieces) if p)
    if "[" in text and _MARKER_TEXT.search(text):
        text = _escape_marker_text(text)
    return LogicalLine(line_start, first, last_end, _column(source[line_start:first]), text)


def _escape_marker_text(text: str) -> str:
    """Write marker text outside string literals as ``[ name]`` (same AST, no longer a marker)."""
    return _MARKER_SCAN.sub(lambda m: m.group() if m.lastgroup == "s" else "[ " + m.group()[1:], text)


def render(lines: list[LogicalLine]) -> str:
    """Normalised text of consecutive logical lines, indentation relative to the first of them.

    Indentation closed by the end of the lines is closed with ``[dedent]`` tokens, as the tokenizer
    does at the end of a file.  Raises ``ValueError`` for a dedent to a column never opened.
    """
    if not lines:
        return ""
    out: list[str] = []
    stack = [lines[0].column]
    for line in lines:
        col = line.column
        if col > stack[-1]:
            stack.append(col)
            out.append(INDENT)
        elif col < stack[-1]:
            while col < stack[-1]:
                stack.pop()
                out.append(DEDENT)
                if not stack:
                    raise ValueError(f"dedent below the first line's indentation at offset {line.start}")
            if col != stack[-1]:
                raise ValueError(f"unindent does not match any outer indentation level at offset {line.start}")
        out.append(line.text)
        out.append(NEW_LINE)
    out.extend([DEDENT] * (len(stack) - 1))
    return " ".join(out)


def normalise(code: str) -> str:
    """Normalise Python source (any line endings) to one line of text with whitespace markers."""
    if "\r" in code:
        code = code.replace("\r\n", "\n").replace("\r", "\n")
    return render(logical_lines(code))


def denormalise(text: str, indent: str = "    ") -> str:
    """Rebuild Python source from normalised text (``indent`` per level); the inverse of :func:`normalise`.

    Tolerant of what a model generates: stray dedents are ignored and an unterminated string literal
    is kept as it is.
    """
    lines: list[str] = []
    level = 0
    current: list[str] = []
    cursor = 0

    def flush() -> None:
        line = "".join(current).strip()
        if line:
            lines.append(indent * level + line)
        current.clear()

    for m in _MARKER_SCAN.finditer(text):
        if m.lastgroup == "s":
            continue
        current.append(text[cursor:m.start()])
        cursor = m.end()
        marker = m.group()
        if marker == NEW_LINE:
            flush()
        else:
            flush()
            level = level + 1 if marker == INDENT else max(level - 1, 0)
    current.append(text[cursor:])
    flush()
    return "\n".join(lines) + "\n" if lines else ""


def split_signature(normalised: str) -> tuple[str, str]:
    """Split normalised code into its header and the rest (the PyCodeGPT ``signature`` and body).

    The header runs through the colon that ends the first ``def``/``class`` line, decorator lines
    before it included; ``header + " " + body == normalised`` (the body is empty for no header).
    """
    pos = 0
    depth = 0
    matches = _HEADER_SCAN.finditer(normalised)
    for m in matches:
        kind = m.lastgroup
        if kind == "s":
            continue
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        elif tok == ":" and depth == 0:
            # a colon at depth 0 is the header's only when its logical line is not a decorator
            line_start = normalised.rfind(NEW_LINE, 0, m.start())
            line_start = 0 if line_start < 0 else line_start + len(NEW_LINE)
            if not normalised[line_start:m.start()].lstrip().startswith("@"):
                pos = m.end()
                break
    else:
        return normalised, ""
    return normalised[:pos], normalised[pos:].lstrip(" ")


_HEADER_SCAN = re.compile(rf"(?P<s>{_STRING})|(?P<b>[()\[\]{{}}:])", re.VERBOSE | re.DOTALL)
