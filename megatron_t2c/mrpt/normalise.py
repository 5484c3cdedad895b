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
text in code outside string literals is escaped so that it cannot be mistaken for a marker
(:func:`_escape_marker_text`); the AST is unchanged.

The scanner (:func:`logical_lines`) is a single regular expression, several times faster than ``tokenize``
and checked against it; f-strings are read with the PEP 701 grammar on any Python.
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
_PLAIN_STRING = re.compile(_STRING, re.VERBOSE | re.DOTALL)
# One match per interesting item, with the plain text before it (no quote, comment, backslash or line
# break) consumed by a fast character-class loop: that gap is where brackets are counted.  ``q`` is a
# quote that opens no literal of the regular grammar (an f-string spanning lines, or an unterminated one).
_SCAN = re.compile(rf"""[^'"\#\\\n]*(?:(?P<s>{_STRING})|(?P<c>\#[^\n]*)|(?P<k>\\\n)|(?P<n>\n)|(?P<q>['"]))""",
                   re.VERBOSE | re.DOTALL)
_MARKER_TEXT = re.compile(r"\[(new_line|indent|dedent)\]")
# an opening quote (the literal is skipped with _string_end) or marker text: markers inside strings are
# left alone
_MARKER_SCAN = re.compile(r"""(?P<q>['"])|(?P<m>\[(?:new_line|indent|dedent)\])""")

# String prefixes whose literals have replacement fields: f-strings, and t-strings (PEP 750, Python 3.14),
# which share the f-string grammar.
_TEMPLATE_PREFIXES = frozenset({"f", "rf", "fr", "t", "rt", "tr"})
# the characters at which an f-string's literal text (or format spec), and a replacement field, change state
_LITERAL_STOP = re.compile(r"""[\\{}'"\n]""")
_FIELD_STOP = re.compile(r"""[\\{}()\[\]'"\#:\n]""")


def _prefix(source: str, quote: int) -> str:
    """The string prefix (lower case) before the opening quote at ``quote``: the identifier characters
    that precede it, as the tokenizer reads them (``ref"x"`` is the name ``ref`` and a plain string)."""
    i = quote
    while i > 0 and (source[i - 1].isalnum() or source[i - 1] == "_"):
        i -= 1
    return source[i:quote].lower()


def _string_end(source: str, quote: int) -> int:
    """Offset just past the string literal whose opening quote is at ``quote`` (any prefix before it).

    Raises ``ValueError`` for an unterminated literal.
    """
    if _prefix(source, quote) in _TEMPLATE_PREFIXES:
        return _template_end(source, quote)
    m = _PLAIN_STRING.match(source, quote)
    if m is None:
        raise ValueError(f"unterminated string literal near offset {quote}")
    return m.end()


def _template_end(source: str, quote: int) -> int:
    """Offset just past the f-string (or t-string) whose opening quote is at ``quote``, by PEP 701.

    Literal text: a backslash escapes the next character except a brace (``\\{x}`` is a backslash and a
    field); ``\\N{...}`` is a named escape unless the string is raw; ``{{`` and ``}}`` are literal braces.
    A replacement field is an expression (brackets, nested string literals of any quotes, comments, line
    breaks) up to the ``}`` at its own bracket depth, or up to a ``:`` there that opens the format spec:
    literal text in which every ``{`` opens a nested field and ``}`` closes the field.
    """
    raw = "r" in _prefix(source, quote)
    delimiter = source[quote] * 3 if source.startswith(source[quote] * 3, quote) else source[quote]
    return _literal_end(source, quote + len(delimiter), delimiter, raw, spec=False)


def _literal_end(source: str, i: int, delimiter: str, raw: bool, spec: bool) -> int:
    """Scan f-string literal text from ``i``; return the offset past the closing delimiter or, in a format
    spec (``spec``), past the ``}`` that closes the replacement field."""
    single_line = len(delimiter) == 1
    while True:
        m = _LITERAL_STOP.search(source, i)
        if m is None:
            raise ValueError(f"unterminated f-string near offset {i}")
        i = m.start()
        c = source[i]
        if c == "\\":
            after = source[i + 1:i + 2]
            if after == "N" and not raw and source.startswith("{", i + 2):
                close = source.find("}", i + 3)
                if close < 0:
                    raise ValueError(f"unterminated \\N{{...}} escape near offset {i}")
                i = close + 1
            elif after == "{" or after == "}":
                i += 1
            else:
                i += 2
        elif c == "{":
            if not spec and source.startswith("{", i + 1):
                i += 2
            else:
                i = _field_end(source, i + 1, delimiter, raw)
        elif c == "}":
            if spec:
                return i + 1
            i += 2 if source.startswith("}", i + 1) else 1
        elif c == "\n":
            if single_line:
                raise ValueError(f"unterminated f-string near offset {i}")
            i += 1
        elif source.startswith(delimiter, i):
            if spec:
                raise ValueError(f"f-string replacement field not closed near offset {i}")
            return i + len(delimiter)
        else:  # the other quote, or one quote of a triple-quoted delimiter
            i += 1


def _field_end(source: str, i: int, delimiter: str, raw: bool) -> int:
    """Scan an f-string replacement field's expression from ``i``; return the offset past its ``}``."""
    depth = 0
    while True:
        m = _FIELD_STOP.search(source, i)
        if m is None:
            raise ValueError(f"f-string replacement field not closed near offset {i}")
        i = m.start()
        c = source[i]
        if c == "(" or c == "[" or c == "{":
            depth += 1
            i += 1
        elif c == ")" or c == "]":
            depth -= 1
            i += 1
        elif c == "}":
            if depth == 0:
                return i + 1
            depth -= 1
            i += 1
        elif c == "'" or c == '"':
            i = _string_end(source, i)
        elif c == "#":
            newline = source.find("\n", i)
            if newline < 0:
                raise ValueError(f"f-string replacement field not closed near offset {i}")
            i = newline
        elif c == ":" and depth == 0:
            return _literal_end(source, i + 1, delimiter, raw, spec=True)
        elif c == "\\":
            i += 2
        else:  # ``:`` inside brackets, or a line break
            i += 1


def _outside_strings(pattern: re.Pattern, text: str):
    """Matches of ``pattern`` outside string literals; its group ``q`` matches an opening quote.

    Tolerant of generated text: a quote that opens no complete literal is passed over.
    """
    pos = 0
    while True:
        m = pattern.search(text, pos)
        if m is None:
            return
        if m.lastgroup == "q":
            try:
                pos = _string_end(text, m.start())
            except ValueError:
                pos = m.end()
            continue
        yield m
        pos = m.end()


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

    The scanner is a single regular expression over the source (strings, comments, continuations and line
    breaks) with bracket depth counted in the C-level gaps between matches, several times faster than the
    ``tokenize`` module; tests check it against ``tokenize`` on the whole standard library.  f-strings (and
    PEP 750 t-strings) are read with the PEP 701 grammar of Python 3.12 on any Python: a replacement field
    may hold strings with the same quotes, comments and line breaks, so their extent is found by a small
    scanner over the literal text, the fields and the format specs (:func:`_template_end`).  Any string
    literal, an f-string included, is one token whose text is kept exactly.
    """
    lines: list[LogicalLine] = []
    pieces: list[str] = []  # text of the current logical line, split at breaks and comments
    line_start = 0  # offset where the current logical line's first physical line began
    piece_start = 0
    first = -1  # offset of the first character of the current logical line, -1 while blank
    last_end = 0  # offset just past the last content seen in the current logical line
    depth = 0
    cursor = 0
    scan = _SCAN.match
    while True:
        m = scan(source, cursor)
        if m is None:
            break
        start = cursor
        kind = m.lastgroup
        tok = m.start(kind)
        cursor = m.end()
        if kind == "q" or (kind == "s" and tok and source[tok - 1] in "fFrRtT"):
            # an f-string: the regular grammar ends it at the first closing quote, which is right only
            # while no replacement field came before it
            if ((kind == "q" or source.find("{", tok, cursor) >= 0)
                    and _prefix(source, tok) in _TEMPLATE_PREFIXES):
                cursor = _template_end(source, tok)
            elif kind == "q":
                raise ValueError(f"unterminated string literal near offset {tok}")
            kind = "s"
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
            if multiline_strings is not None and "\n" in source[tok:cursor]:
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
    if "\\" in rest:  # the scan stops only at the end or at a backslash that continues no line
        at = source.index("\\", cursor)
        raise ValueError(f"unexpected character after line continuation near offset {at}")
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
    """Write marker text outside string literals as ``[ name]`` (same AST, no longer a marker).

    Marker text that appears in code outside string literals (``a[indent]`` subscripts a variable called
    ``indent``) is written ``a[ indent]`` so that it cannot be mistaken for a marker: the AST is unchanged.
    """
    out = []
    cursor = 0
    for m in _outside_strings(_MARKER_SCAN, text):
        out.append(text[cursor:m.start()] + "[ ")
        cursor = m.start() + 1
    out.append(text[cursor:])
    return "".join(out)


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

    for m in _outside_strings(_MARKER_SCAN, text):
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
    for m in _outside_strings(_HEADER_SCAN, normalised):
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


_HEADER_SCAN = re.compile(r"""(?P<q>['"])|(?P<b>[()\[\]{}:])""")
