"""A slow reference normaliser built on the standard ``tokenize`` module (tests only).

It states the specification independently of the fast scanner: the text of each logical line is its
tokens joined by the whitespace between them, a single space where a line break separated them.
"""

import io
import tokenize

from megatron_t2c.mrpt.special_tokens import DEDENT, INDENT, NEW_LINE

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


# Python 3.12+ tokenizes an f-string into pieces (3.14 a t-string too); a string literal is one token here
_PIECES_START = {getattr(tokenize, name) for name in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, name)}
_PIECES_END = {getattr(tokenize, name) for name in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, name)}


def _string_literals_whole(tokens, lines):
    """Merge the pieces of each f-string (nested ones included) into one STRING token: its source text."""
    depth = 0
    start = None
    for tok in tokens:
        if tok.type in _PIECES_START:
            if depth == 0:
                start = tok
            depth += 1
        elif depth and tok.type in _PIECES_END:
            depth -= 1
            if depth == 0:
                (r0, c0), (r1, c1) = start.start, tok.end
                text = "".join(lines[r0 - 1:r1])
                text = text[c0:len(text) - len(lines[r1 - 1]) + c1]
                yield tokenize.TokenInfo(tokenize.STRING, text, start.start, tok.end, start.line)
        elif not depth:
            yield tok


def reference_normalise(code: str) -> str:
    out = []
    line_tokens = []
    lines = io.StringIO(code).readlines()  # as tokenize reads them (splitlines also breaks at \f)

    def text_of(tokens):
        parts = []
        prev = None
        for tok in tokens:
            if prev is not None:
                if prev.end[0] == tok.start[0]:
                    parts.append(lines[tok.start[0] - 1][prev.end[1]:tok.start[1]])
                else:
                    parts.append(" ")
            parts.append(tok.string)
            prev = tok
        return "".join(parts)

    for tok in _string_literals_whole(tokenize.generate_tokens(io.StringIO(code).readline), lines):
        if tok.type in _SKIP:
            continue
        if tok.type == tokenize.INDENT:
            out.append(INDENT)
        elif tok.type == tokenize.DEDENT:
            out.append(DEDENT)
        elif tok.type == tokenize.NEWLINE:
            if line_tokens:
                out.append(text_of(line_tokens))
                out.append(NEW_LINE)
            line_tokens = []
        else:
            line_tokens.append(tok)
    if line_tokens:
        out.append(text_of(line_tokens))
        out.append(NEW_LINE)
    return " ".join(out)
