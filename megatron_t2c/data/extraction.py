"""Extraction of functions, methods and classes from Python source with tree-sitter (paper Appendix A).

For one decoded file, :func:`extract_records` finds every ``def`` (methods, nested and ``async`` ones
included) and every ``class`` with tree-sitter, and turns each into a :class:`Record`:

- the docstring is the definition's first statement when it is a plain string literal (PEP 257),
  cleaned like :func:`inspect.cleandoc`; it is removed from the code, and a body left empty gets ``pass``;
- comments are removed (a comment-only line disappears with its line break);
- the code is dedented to column 0 (lines that begin inside a multi-line string are left alone);
- ``normalised`` is the code after :mod:`megatron_t2c.mrpt.normalise`.

All removals are applied to the whole file at once, and the cleaned file must parse with Python's own
parser: that is both the ``not_python3`` filter and the proof that every record is valid Python (each
record is a complete statement cut out of a valid module and dedented).  "Python 3" here means what
this interpreter's compiler front end accepts (parser and scope analysis, via ``symtable``).
"""

from __future__ import annotations

import ast
import bisect
import hashlib
import inspect
import json
import re
import symtable
import warnings
from dataclasses import dataclass

import tree_sitter_python
from tree_sitter import Language, Node, Parser, Query, QueryCursor

from megatron_t2c.mrpt.normalise import LogicalLine, logical_lines, render
from megatron_t2c.data.source_files import NOT_PYTHON3, Rejected

#: tree-sitter found a syntax error in a file Python parses (a grammar gap): no records are trusted.
TREE_SITTER_ERROR = "tree_sitter_error"
#: removing comments and docstrings broke a file that parses (a bug: tests keep this at zero).
CLEANING_FAILED = "cleaning_failed"

FUNCTION, METHOD, CLASS = "function", "method", "class"

_LANGUAGE = Language(tree_sitter_python.language())
# Everything extraction needs from a tree in one C-side pass (no walking up with Node.parent, which
# tree-sitter answers by walking down from the root).
_QUERY = Query(_LANGUAGE, """
(function_definition) @def
(class_definition) @def
(comment) @comment
(decorated_definition) @decorated
(class_definition body: (block [(function_definition) @method
                                (decorated_definition definition: (function_definition) @method)]))
""")
_PARSER: Parser | None = None


@dataclass
class Record:
    """One extracted definition: a text-code pair when it has a docstring, else code-only."""

    id: str  # stable content hash of the normalised code (also the function-level dedup key)
    path: str  # the file, relative to the input root it was found under
    kind: str  # function | method | class
    name: str
    signature: str  # the header from def/async def/class through its colon, on one line
    docstring: str | None  # cleaned like inspect.cleandoc; None when there is none
    code: str  # the whole definition, decorators included, without docstring and comments, at column 0
    normalised: str  # the code with [new_line] [indent] [dedent] (megatron_t2c.mrpt.normalise)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "path": self.path, "kind": self.kind, "name": self.name,
                           "signature": self.signature, "docstring": self.docstring, "code": self.code,
                           "normalised": self.normalised}, ensure_ascii=False)


def _parser() -> Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = Parser(_LANGUAGE)
    return _PARSER


class _CharOffsets:
    """Byte offsets (tree-sitter, UTF-8) to character offsets (``str``) of one text."""

    def __init__(self, text: str):
        self.ascii = text.isascii()
        if self.ascii:
            return
        self.byte_starts: list[int] = []  # byte offset of each non-ASCII character
        self.extra: list[int] = [0]  # extra bytes taken by the first k non-ASCII characters
        extra = 0
        for m in re.finditer(r"[^\x00-\x7f]", text):
            self.byte_starts.append(m.start() + extra)
            extra += len(m.group().encode("utf-8")) - 1
            self.extra.append(extra)

    def __call__(self, byte_offset: int) -> int:
        if self.ascii:
            return byte_offset
        return byte_offset - self.extra[bisect.bisect_left(self.byte_starts, byte_offset)]


class _Edits:
    """Non-overlapping replacements of character ranges, and the offset map they induce."""

    def __init__(self, edits: list[tuple[int, int, str]]):
        edits.sort()
        kept: list[tuple[int, int, str]] = []
        for edit in edits:  # a comment inside a removed docstring line is already gone
            if kept and edit[0] < kept[-1][1]:
                continue
            kept.append(edit)
        self.edits = kept
        self.starts = [e[0] for e in kept]
        self.removed = [0]  # characters removed by the first k edits
        for start, end, repl in kept:
            self.removed.append(self.removed[-1] + (end - start) - len(repl))

    def apply(self, text: str) -> str:
        parts = []
        pos = 0
        for start, end, repl in self.edits:
            parts.append(text[pos:start])
            parts.append(repl)
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def map(self, offset: int) -> int:
        """Where ``offset`` of the original text lands in the edited one (inside an edit: its start)."""
        k = bisect.bisect_right(self.starts, offset) - 1
        if k < 0:
            return offset
        start, end, _ = self.edits[k]
        if offset < end:
            return start - self.removed[k]
        return offset - self.removed[k + 1]


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _comment_edit(text: str, start: int, end: int) -> tuple[int, int, str]:
    ls = _line_start(text, start)
    if text[ls:start].isspace() or ls == start:  # a comment-only line: drop the line
        return ls, end + 1 if text.startswith("\n", end) else end, ""
    lead = len(text[ls:start]) - len(text[ls:start].rstrip())
    return start - lead, end, ""


def _next_statement(node: Node | None) -> Node | None:
    """``node`` or the first named sibling after it that is not a comment."""
    while node is not None and node.type == "comment":
        node = node.next_named_sibling
    return node


def _docstring(node: Node, text: str, chars: _CharOffsets) -> tuple[str | None, tuple[int, int, str] | None]:
    """The definition's docstring and the edit that removes it from the code."""
    body = node.child_by_field_name("body")
    if body is None:
        return None, None
    first = _next_statement(body.named_child(0))
    if first is None or first.type != "expression_statement" or first.named_child_count != 1:
        return None, None
    literal = first.named_child(0)
    if literal.type not in ("string", "concatenated_string"):
        return None, None
    if not _is_text_literal(literal, text, chars):
        return None, None  # bytes and f-strings are not docstrings
    start, end = chars(first.start_byte), chars(first.end_byte)
    source = text[start:end]
    docstring = inspect.cleandoc(_literal_value(source, first)) or None  # an empty one says nothing
    if _next_statement(first.next_named_sibling) is None:  # the docstring was the whole body
        return docstring, (start, end, "pass")
    # other statements follow: drop the literal, a ';' after it, and its line when nothing else is on it
    nxt = first.next_sibling
    if nxt is not None and nxt.type == ";":
        end = chars(nxt.end_byte)
    while end < len(text) and text[end] in " \t":
        end += 1
    ls = _line_start(text, start)
    if text[ls:start].strip() == "" and (end == len(text) or text[end] in "\n#"):
        eol = text.find("\n", end)
        return docstring, (ls, len(text) if eol < 0 else eol + 1, "")
    return docstring, (start, end, "")


def _is_text_literal(literal: Node, text: str, chars: _CharOffsets) -> bool:
    """Whether a string or concatenated-string node is a ``str`` literal (no bytes or f-string part)."""
    parts = literal.named_children if literal.type == "concatenated_string" else [literal]
    for part in parts:
        opening = part.child(0) if part.child_count else None
        if opening is None or opening.type != "string_start":
            return False
        prefix = text[chars(opening.start_byte):chars(opening.end_byte)].rstrip("'\"").lower()
        if "f" in prefix or "b" in prefix:
            return False
    return True


_SIMPLE_LITERAL = re.compile(r"""[rRuU]?('''|\"\"\"|'|")(.*)\1""", re.DOTALL)


def _literal_value(source: str, node: Node) -> str:
    """The value of a str literal; escapes and concatenations go through Python's own parser."""
    m = _SIMPLE_LITERAL.fullmatch(source)
    if m is not None and "\\" not in m.group(2) and m.group(1)[0] not in m.group(2):
        return m.group(2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.literal_eval(source)
    except (SyntaxError, ValueError):
        raise Rejected(NOT_PYTHON3, f"invalid string literal at line {node.start_point[0] + 1}") from None


def _header_end(node: Node) -> int:
    """Byte offset just past the colon that ends a definition's header (comments may follow it)."""
    colon = node.child_by_field_name("body").prev_sibling
    while colon.type != ":":
        colon = colon.prev_sibling
    return colon.end_byte


def _dedent(source: str, lo: int, hi: int, prefix: str, strings: list[tuple[int, int]],
            string_starts: list[int]) -> str:
    """``source[lo:hi]`` without ``prefix`` at the start of each line that does not begin inside one of
    the multi-line string literals ``strings`` (sorted (start, end) offsets, starts in ``string_starts``)."""
    code = source[lo:hi]
    if not prefix:
        return code
    k = bisect.bisect_left(string_starts, lo)
    inside = []
    while k < len(strings) and strings[k][0] < hi:
        inside.append(strings[k])
        k += 1
    if not inside:
        return re.sub("^" + re.escape(prefix), "", code, flags=re.MULTILINE)
    out = []
    pos = lo
    n = len(prefix)
    for line in code.split("\n"):
        width = len(line) + 1
        if line.startswith(prefix) and not any(start < pos < end for start, end in inside):
            line = line[n:]
        out.append(line)
        pos += width
    return "\n".join(out)


def _check_parses(cleaned: str, text: str) -> None:
    """The cleaned file must compile; when it does not, the original decides between the two reasons."""
    try:
        check_python3(cleaned)
        return
    except Rejected:
        pass
    check_python3(text)
    raise Rejected(CLEANING_FAILED, "the file compiles but not once comments and docstrings are removed")


def check_python3(text: str) -> None:
    """Raise ``Rejected(not_python3)`` unless this interpreter's compiler front end accepts ``text``.

    ``symtable`` runs CPython's parser and its scope analysis without building Python AST objects or
    bytecode: the cheapest complete check.  It also rejects what only the compiler rejects, such as a
    misplaced ``from __future__`` import or an unknown future feature.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            symtable.symtable(text, "<source>", "exec")
        except (SyntaxError, ValueError) as exc:
            raise Rejected(NOT_PYTHON3, str(exc).split("\n")[0]) from None


def content_id(normalised: str) -> str:
    """The stable id of a record: a hash of its normalised code."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


def extract_records(text: str, path: str, rejected: list[str] | None = None) -> list[Record]:
    """All definitions in one decoded file (``\\n`` line endings), in source order.

    Raises :class:`~megatron_t2c.data.source_files.Rejected` when the file is not Python 3 (or tree-sitter
    cannot parse a file that Python can).  A single definition that cannot be cut out cleanly is left
    out and described in ``rejected`` (when given) instead of failing the file.
    """
    tree = _parser().parse(text.encode("utf-8"))
    if tree.root_node.has_error:
        check_python3(text)
        raise Rejected(TREE_SITTER_ERROR, "tree-sitter reports a syntax error in a file Python compiles")
    chars = _CharOffsets(text)
    captures = QueryCursor(_QUERY).captures(tree.root_node)
    definitions = sorted(captures.get("def", []), key=lambda n: n.start_byte)
    edits = [_comment_edit(text, chars(c.start_byte), chars(c.end_byte)) for c in captures.get("comment", [])]
    docstrings: dict[int, str | None] = {}
    for node in definitions:
        docstring, edit = _docstring(node, text, chars)
        docstrings[node.id] = docstring
        if edit is not None:
            edits.append(edit)
    methods = {n.id for n in captures.get("method", [])}
    decorated = {n.child_by_field_name("definition").id: n.start_byte for n in captures.get("decorated", [])}
    edited = _Edits(edits)
    cleaned = edited.apply(text)
    _check_parses(cleaned, text)
    if not definitions:
        return []
    strings: list[tuple[int, int]] = []
    lines = logical_lines(cleaned, strings)
    layout = _Layout(cleaned, lines, strings)
    records = []
    for node in definitions:
        kind = CLASS if node.type == "class_definition" else METHOD if node.id in methods else FUNCTION
        start = decorated.get(node.id, node.start_byte)
        try:
            records.append(_record(node, kind, start, docstrings[node.id], path, text, layout, chars, edited))
        except ValueError as exc:
            if rejected is None:
                raise
            rejected.append(f"{path}:{node.start_point[0] + 1}: {exc}")
    return records


@dataclass
class _Layout:
    """The cleaned file: its logical lines and its multi-line string literals, with sorted starts."""

    cleaned: str
    lines: list[LogicalLine]
    strings: list[tuple[int, int]]

    def __post_init__(self) -> None:
        self.starts = [line.start for line in self.lines]
        self.string_starts = [start for start, _ in self.strings]


def _record(node: Node, kind: str, start_byte: int, docstring: str | None, path: str, text: str,
            layout: _Layout, chars: _CharOffsets, edited: _Edits) -> Record:
    """One record; ``start_byte`` is where the definition starts, its decorators included."""
    cleaned, lines, starts = layout.cleaned, layout.lines, layout.starts
    begin = edited.map(chars(start_byte))
    end = edited.map(chars(node.end_byte))
    first = bisect.bisect_left(starts, begin)
    last = bisect.bisect_left(starts, end) - 1
    if first >= len(lines) or lines[first].start != begin or last < first:
        raise ValueError("no logical line starts the definition")
    span = lines[first:last + 1]
    head = span[0]
    prefix = cleaned[head.line_start:head.start]
    code = _dedent(cleaned, head.line_start, span[-1].end, prefix, layout.strings, layout.string_starts) + "\n"
    header = cleaned[edited.map(chars(node.start_byte)):edited.map(chars(_header_end(node)))]
    if "\n" in header:
        signature = " ".join(line.text for line in logical_lines(header))
    else:
        signature = header.strip()
    normalised = render(span)
    name_node = node.child_by_field_name("name")
    name = text[chars(name_node.start_byte):chars(name_node.end_byte)] if name_node is not None else ""
    return Record(id=content_id(normalised), path=path, kind=kind, name=name, signature=signature,
                  docstring=docstring, code=code, normalised=normalised)
