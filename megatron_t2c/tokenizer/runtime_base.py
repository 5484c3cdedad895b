"""What both runtime tokenizers share: the fixed special ids, and encoding text as text and format samples.

:class:`RuntimeTokenizerBase` needs ``tokenize(text)`` (marker text gives the markers' ids) and
``encode_batch_flat(texts)`` from its subclasses: SentencePiece's
:class:`~megatron_t2c.tokenizer.sentencepiece.T2CTokenizerCore` and Hugging Face's
:class:`~megatron_t2c.tokenizer.huggingface.HFTokenizerCore`.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.formats import Segment, sample_text

#: Format-marker text (``[eoc]`` ...) inside docstrings or code, which must stay text.
MARKER_TEXT = re.compile("|".join(re.escape(m) for m in st.FORMAT_MARKERS))


class RuntimeTokenizerBase:
    """The fixed special ids (:mod:`megatron_t2c.mrpt.special_tokens`), and text-as-text and format-sample
    encoding over a subclass's ``tokenize`` and ``encode_batch_flat``."""

    eod = property(lambda self: st.EOD_ID, doc="End of document: ``[eoc]``.")
    pad = property(lambda self: st.PAD_ID, doc="Padding (``<pad>``).")
    unk = property(lambda self: st.UNK_ID, doc="``<unk>`` (never produced).")
    bos = property(lambda self: st.BOS_ID, doc="``<s>`` (not used by the formats).")
    eos = property(lambda self: st.EOS_ID, doc="``</s>`` (not used by the formats; documents end with eod).")
    mask = property(lambda self: st.MASK_ID, doc="``[MASK]`` for CORRUPT-CODE.")
    descr = property(lambda self: st.DESCR_ID, doc="``[descr]``.")
    python = property(lambda self: st.PYTHON_ID, doc="``[python]``.")
    eoc = property(lambda self: st.EOC_ID, doc="``[eoc]``.")
    sos = property(lambda self: st.SOS_ID, doc="``[sos]``.")
    new_line = property(lambda self: st.NEW_LINE_ID, doc="``[new_line]``.")
    indent = property(lambda self: st.INDENT_ID, doc="``[indent]``.")
    dedent = property(lambda self: st.DEDENT_ID, doc="``[dedent]``.")

    @property
    def special_ids(self) -> dict[str, int]:
        """Every special piece and its id (:data:`megatron_t2c.mrpt.special_tokens.IDS`)."""
        return dict(st.IDS)

    def needs_care(self, text: str) -> bool:
        """Whether ``text`` cannot go through plain ``tokenize`` as text: it holds format-marker text."""
        return "[" in text and MARKER_TEXT.search(text) is not None

    def encode_text(self, text: str) -> list[int]:
        """Encode text as text: marker text inside it never gives a format-marker id.

        Whitespace markers (``[new_line] [indent] [dedent]``) still give their ids: in code they are
        structure.  Format-marker text is cut after its ``[`` and the two sides encoded separately, so it
        becomes ordinary pieces that still decode to the same characters.
        """
        if "[" not in text or not MARKER_TEXT.search(text):
            return self.tokenize(text)
        ids: list[int] = []
        start = 0
        for match in MARKER_TEXT.finditer(text):
            cut = match.start() + 1
            ids += self.tokenize(text[start:cut])
            start = cut
        ids += self.tokenize(text[start:])
        return ids

    def encode_sample(self, segments: Sequence[Segment]) -> list[int]:
        """Encode a format sample: marker segments as their ids, text segments as text.

        The ids decode to :func:`megatron_t2c.mrpt.formats.sample_text` of the segments.  Text between two
        markers is encoded together with the single spaces that separate it from them, exactly as in
        the joined sample, so a sample without marker text inside gets the same ids as
        ``tokenize(sample_text(segments))``.
        """
        ids: list[int] = []
        buffer: list[str] = []
        first = True
        for seg in segments:
            if not seg.text:
                continue
            if not first:
                buffer.append(" ")
            first = False
            if seg.is_marker:
                if buffer:
                    ids += self.encode_text("".join(buffer))
                    buffer.clear()
                ids.append(st.IDS[seg.text])
            else:
                buffer.append(seg.text)
        if buffer:
            ids += self.encode_text("".join(buffer))
        return ids

    def encode_samples(self, samples: Sequence[Sequence[Segment]]) -> list[np.ndarray]:
        """Encode many samples at once; int32 arrays, one per sample (see :meth:`encode_samples_flat`)."""
        tokens, lengths = self.encode_samples_flat(samples)
        return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def encode_samples_flat(self, samples: Sequence[Sequence[Segment]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode many samples at once: all their ids in a row (int32) and each one's length (int64).

        Same ids as :meth:`encode_sample` on each, much faster: samples whose text needs no care
        (:meth:`needs_care`; all but a few) are encoded as their joined text by ``encode_batch_flat``.
        """
        careful: dict[int, list[int]] = {}
        batch: list[str] = []
        for i, segments in enumerate(samples):
            if any(not seg.is_marker and self.needs_care(seg.text) for seg in segments):
                careful[i] = self.encode_sample(segments)
            else:
                batch.append(sample_text(segments))
        tokens, lengths = self.encode_batch_flat(batch)
        if not careful:
            return tokens, lengths
        parts = np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []
        rows, fast = [], iter(parts)
        for i in range(len(samples)):
            rows.append(np.asarray(careful[i], dtype=np.int32) if i in careful else next(fast))
        return (np.concatenate(rows).astype(np.int32, copy=False),
                np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """``tokenize`` of many texts as int32 arrays, one per text (see ``encode_batch_flat``)."""
        tokens, lengths = self.encode_batch_flat(texts)
        return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []
