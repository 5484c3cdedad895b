"""The special tokens of the text-to-code formats and their fixed SentencePiece ids.

Ids 0-3 are SentencePiece's control pieces; the user-defined pieces follow in the order of
``USER_DEFINED``, so every tokenizer trained by ``t2c tokenizer`` gives the same id to the
same marker whatever its vocabulary size.

======  ==============  ==========================================================
id      piece           role
======  ==============  ==========================================================
0       ``<pad>``       padding
1       ``<unk>``       unknown (never produced: byte fallback covers every byte)
2       ``<s>``         beginning of sentence (not used by the formats)
3       ``</s>``        end of sentence (not used by the formats)
4       ``[descr]``     starts the docstring (natural-language) segment
5       ``[python]``    starts the code segment
6       ``[eoc]``       end of code: end of document in the packed datasets
7       ``[sos]``       starts a PyCodeGPT sample (its signature)
8       ``[MASK]``      CORRUPT-CODE masking token
9       ``[new_line]``  end of a logical line of code
10      ``[indent]``    one indentation level deeper
11      ``[dedent]``    one indentation level shallower
12-14   ``\\n \\t \\r``    raw whitespace inside string literals survives tokenisation
======  ==============  ==========================================================
"""

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

DESCR = "[descr]"
PYTHON = "[python]"
EOC = "[eoc]"
SOS = "[sos]"
MASK = "[MASK]"
NEW_LINE = "[new_line]"
INDENT = "[indent]"
DEDENT = "[dedent]"

#: Format markers (they delimit modalities; never duplicated into code rows).
FORMAT_MARKERS = (DESCR, PYTHON, EOC, SOS, MASK)
#: Whitespace markers produced by :mod:`megatron_t2c.mrpt.normalise`.
WHITESPACE_MARKERS = (NEW_LINE, INDENT, DEDENT)
#: Raw characters that must stay atomic so that code inside string literals round-trips.
RAW_WHITESPACE = ("\n", "\t", "\r")
#: User-defined SentencePiece pieces, in id order starting at ``FIRST_USER_ID``.
USER_DEFINED = FORMAT_MARKERS + WHITESPACE_MARKERS + RAW_WHITESPACE
FIRST_USER_ID = 4

#: The fixed id of every special piece.
IDS = {PAD: PAD_ID, UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID}
IDS.update({piece: FIRST_USER_ID + i for i, piece in enumerate(USER_DEFINED)})
DESCR_ID, PYTHON_ID, EOC_ID, SOS_ID, MASK_ID = (IDS[t] for t in FORMAT_MARKERS)
NEW_LINE_ID, INDENT_ID, DEDENT_ID = (IDS[t] for t in WHITESPACE_MARKERS)
EOD_ID = EOC_ID  # end of document in packed datasets
