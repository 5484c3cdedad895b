"""A slow reference normaliser built on the standard ``tokenize`` module (tests only).

It states the specification independently of the fast scanner: the text of each logical line is its
tokens joined by the whitespace between them, a single space where a line break separated them.
"""

import io
import tokenize

from megatron_t2c.mrpt.special_tokens import DEDENT, INDENT, NEW_LINE

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def reference_normalise(code: str) -> str:
    out = []
    line_tokens = []
    lines = code.splitlines(keepends=True)

    def text_of(tokens):
        parts = []
        prev = None
        for tok in tokens:
            if prev is not None:
                if prev.end[0] == tok.start[0]:
                    parts.append(lines[tok.start[0] - 1][prev.end[1]:tok.start[1]])
                else:
                    parts.append(" ")
            s = tok.string
            if tok.type == tokenize.OP and s[0] == "[" and False:
                pass
            parts.append(s)
            prev = tok
        return "".join(parts)

    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
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
