"""The PanGu-Coder and PyCodeGPT sample formats (paper §3.1 and App. B.2).

A record (one function, method or class) becomes one training sample::

    pangu       [descr] docstring [python] code [eoc]
    pycodegpt   [sos] signature [descr] docstring [python] body [eoc]

``code`` is the whitespace-normalised definition (:func:`megatron_t2c.mrpt.normalise.normalise`), beginning
with its signature; ``signature`` and ``body`` are its two halves from
:func:`megatron_t2c.mrpt.normalise.split_signature`.  Code-only records (no docstring) leave out
``[descr] docstring``.  Docstrings have their whitespace collapsed to single spaces; a docstring that is
empty after that counts as no docstring.

A sample is a tuple of :class:`Segment` s, each either a format marker or text.  Keeping them apart lets
the tokenizer give markers their ids while text is tokenised as text: marker *text* inside a docstring or
code (a string literal ``'[eoc]'``, a docstring that mentions ``[python]``) must never become a marker id,
or it would end the document or switch modality in the middle of a sample.  The whitespace markers
``[new_line] [indent] [dedent]`` inside code text are structural and do become their ids.

:func:`sample_text` joins the segments with single spaces (empty text segments are left out): the form
for humans and for tokenizer training.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

from . import special_tokens as st
from .normalise import normalise, split_signature

#: The supported formats, the first being the default.
FORMATS = ("pangu", "pycodegpt")
#: Which records a dataset keeps: pairs with a docstring, records without, or both.
INCLUDE = ("text-code", "code-only", "all")


class Segment(NamedTuple):
    """One piece of a sample: a format marker (``is_marker``) or text to tokenise as text."""

    text: str
    is_marker: bool = False


def marker(piece: str) -> Segment:
    """A marker segment; ``piece`` must be one of :data:`megatron_t2c.mrpt.special_tokens.FORMAT_MARKERS`."""
    if piece not in st.FORMAT_MARKERS:
        raise ValueError(f"{piece!r} is not a format marker")
    return Segment(piece, True)


# The marker segments, built once: formatting happens once per record on the preprocessing hot path.
_DESCR, _PYTHON, _EOC, _SOS = (Segment(m, True) for m in (st.DESCR, st.PYTHON, st.EOC, st.SOS))


def clean_docstring(docstring: str | None) -> str | None:
    """Collapse runs of whitespace (newlines included) to single spaces; ``None`` when nothing is left."""
    if docstring is None:
        return None
    cleaned = " ".join(docstring.split())
    return cleaned or None


def format_code(normalised: str, docstring: str | None, fmt: str = "pangu") -> tuple[Segment, ...]:
    """The segments of one sample from normalised code and its (raw or cleaned) docstring.

    ``docstring=None`` (or one that is only whitespace) gives the code-only form.
    """
    doc = clean_docstring(docstring)
    if fmt == "pangu":
        if doc is None:
            return (_PYTHON, Segment(normalised), _EOC)
        return (_DESCR, Segment(doc), _PYTHON, Segment(normalised), _EOC)
    if fmt == "pycodegpt":
        header, body = split_signature(normalised)
        if doc is None:
            return (_SOS, Segment(header), _PYTHON, Segment(body), _EOC)
        return (_SOS, Segment(header), _DESCR, Segment(doc), _PYTHON, Segment(body), _EOC)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def record_code(record: Mapping[str, object]) -> str:
    """The record's normalised code: its precomputed ``normalised`` field, else ``normalise(code)``."""
    pre = record.get("normalised")
    if isinstance(pre, str) and pre:
        return pre
    return normalise(record["code"])  # type: ignore[arg-type]


def format_record(record: Mapping[str, object], fmt: str = "pangu") -> tuple[Segment, ...]:
    """The segments of one extraction record (``code``/``normalised`` and ``docstring`` fields)."""
    return format_code(record_code(record), record.get("docstring"), fmt)  # type: ignore[arg-type]


def sample_text(segments: Iterable[Segment]) -> str:
    """The sample as one string: segments joined with single spaces, empty text segments left out."""
    return " ".join(seg.text for seg in segments if seg.text)


def text_segments(segments: Sequence[Segment]) -> list[str]:
    """The text (non-marker) segments of a sample, in order."""
    return [seg.text for seg in segments if not seg.is_marker]


def has_docstring(record: Mapping[str, object]) -> bool:
    """Whether a record is a text-code pair (a docstring with some non-whitespace text)."""
    doc = record.get("docstring")
    return isinstance(doc, str) and not doc.isspace() and doc != ""


def included(record: Mapping[str, object], include: str) -> bool:
    """Whether ``include`` (one of :data:`INCLUDE`) keeps this record."""
    if include == "all":
        return True
    if include == "text-code":
        return has_docstring(record)
    if include == "code-only":
        return not has_docstring(record)
    raise ValueError(f"unknown include {include!r}; choose from {', '.join(INCLUDE)}")
