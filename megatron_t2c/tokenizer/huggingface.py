"""Hugging Face tokenizers (GPT-2, GPT-Neo, PyCodeGPT ... byte-level BPE) seen through the fixed special ids.

Every stage of megatron_t2c relies on the fixed ids of :mod:`megatron_t2c.mrpt.special_tokens` (``[eoc]`` is
6, nothing below ``NUM_SPECIAL`` = 15 is separated, ...).  A Hugging Face tokenizer keeps its own ids; this
module maps them into that id space (the *internal* ids)::

    internal id = OFFSET + hf id          (OFFSET = 15; every id of the HF tokenizer, its added tokens too)
    4 .. 11     = [descr] [python] [eoc] [sos] [MASK] [new_line] [indent] [dedent]
    0 .. 3, 12 .. 14: no token (never produced: raw "\\n" "\\t" "\\r" are the HF tokenizer's own business;
                      decoding skips them)

The markers are *special* added tokens (atomic, never split, not normalised, no stripping), so marker text
is found in a text exactly as by the SentencePiece tokenizer.  A tokenizer that already holds a marker as a
token (a directory exported earlier) keeps that token at the marker's fixed id and records its hf id in
:attr:`HFTokenizerCore.marker_hf_ids` (internal id ``OFFSET + h`` is then never produced).

The map is built once into a *canonical* ``tokenizers.Tokenizer`` whose ids ARE the internal ids (model
vocabulary, added tokens and post-processor ids shifted by ``OFFSET``, markers added at 4..11): encoding and
decoding are then plain calls into the Rust library, and the canonical tokenizer is saved as it is
(:meth:`HFTokenizerCore.save`: ``tokenizer.json`` + the sidecar ``t2c_tokenizer.json`` + the original
``hf_tokenizer.json``).  Loading that directory gives the same ids as loading the original one.

Supported models: BPE, WordPiece and WordLevel (Unigram is refused: its vocabulary is a list whose positions
are the ids).  Byte-level BPE round-trips every text exactly: ``decode(encode(t)) == t``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.runtime_base import RuntimeTokenizerBase

__all__ = ["HFTokenizerCore", "OFFSET", "MARKERS", "SIDECAR_FILE", "ORIGINAL_FILE", "is_hf_tokenizer_dir",
           "TokenizerLoadError"]

#: Internal id = OFFSET + hf id.
OFFSET = 15
#: The markers added as special tokens, at their fixed ids 4..11.
MARKERS = st.FORMAT_MARKERS + st.WHITESPACE_MARKERS
#: The sidecar of a canonical directory (:meth:`HFTokenizerCore.save`).
SIDECAR_FILE = "t2c_tokenizer.json"
#: The original tokenizer JSON (hf ids) kept in a canonical directory.
ORIGINAL_FILE = "hf_tokenizer.json"
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_CONFIG_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
_RESERVED = {st.PAD_ID: st.PAD, st.UNK_ID: st.UNK, st.BOS_ID: st.BOS, st.EOS_ID: st.EOS,
             **{st.IDS[c]: c for c in st.RAW_WHITESPACE}}
_SUPPORTED_MODELS = ("BPE", "WordPiece", "WordLevel")

assert OFFSET == len(st.IDS) and all(st.IDS[m] == 4 + i for i, m in enumerate(MARKERS))


class TokenizerLoadError(ValueError):
    """A path is not a tokenizer this package can load (one-line message)."""


def is_hf_tokenizer_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a Hugging Face tokenizer (``tokenizer.json``, or GPT-2-style
    ``vocab.json`` + ``merges.txt``)."""
    p = Path(path)
    return p.is_dir() and ((p / "tokenizer.json").is_file()
                           or ((p / "vocab.json").is_file() and (p / "merges.txt").is_file()))


def _tokenizers():
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - transformers (the "hf" extra) brings it
        raise TokenizerLoadError("Hugging Face tokenizers need the 'tokenizers' package "
                                 "(pip install 'megatron_t2c[hf]')") from None
    return tokenizers


def _read_original(directory: Path) -> str:
    """The HF tokenizer JSON (hf ids) of an original directory.

    GPT-2's file pair (``vocab.json`` + ``merges.txt``, no ``tokenizer.json``) is GPT-2's byte-level BPE: the
    ByteLevel pre-tokenizer without a prefix space, the ByteLevel decoder and post-processor, and as special
    tokens the bos/eos/unk/pad tokens of ``tokenizer_config.json``/``special_tokens_map.json`` and those of
    ``added_tokens.json`` (``<|endoftext|>`` when there is no config).
    """
    if (directory / "tokenizer.json").is_file():
        return (directory / "tokenizer.json").read_text(encoding="utf-8")
    tokenizers = _tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, processors

    try:
        model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as exc:  # noqa: BLE001 - the Rust library's error
        raise TokenizerLoadError(f"{directory}: cannot read vocab.json + merges.txt: {exc}") from None
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    config = _read_config(directory)
    special = [config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
               if isinstance(config.get(k), str)]
    added_file = directory / "added_tokens.json"
    if added_file.is_file():
        added = json.loads(added_file.read_text(encoding="utf-8"))
        special += [t for t, _ in sorted(added.items(), key=lambda kv: kv[1])]
    if not special and "<|endoftext|>" in tok.get_vocab():
        special = ["<|endoftext|>"]
    if special:
        tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                for t in dict.fromkeys(special)])
    return tok.to_str()


def _read_config(directory: Path) -> dict:
    """bos/eos/unk/pad token strings and model_max_length from tokenizer_config.json/special_tokens_map.json."""
    out: dict[str, Any] = {}
    for name in _CONFIG_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        for key in _CONFIG_KEYS:
            value = data.get(key)
            if isinstance(value, dict):  # an AddedToken dump
                value = value.get("content")
            if value is not None and key not in out:
                out[key] = value
    return out


def _shift_post_processor(proc: Optional[dict], offset: int) -> Optional[dict]:
    if not proc:
        return proc
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for spec in proc.get("special_tokens", {}).values():
            spec["ids"] = [i + offset for i in spec.get("ids", [])]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            if key in proc:
                proc[key] = [proc[key][0], proc[key][1] + offset]
    elif kind == "Sequence":
        for p in proc.get("processors", []):
            _shift_post_processor(p, offset)
    return proc


def _marker_token(content: str, token_id: int) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def build_canonical(original: str, source: str = "tokenizer") -> tuple[str, dict[str, int], int]:
    """(canonical tokenizer JSON, marker_hf_ids, hf_vocab_size) of an original tokenizer JSON (hf ids)."""
    data = json.loads(original)
    model = data.get("model") or {}
    kind = model.get("type")
    if kind not in _SUPPORTED_MODELS:
        raise TokenizerLoadError(f"{source}: tokenizer model type {kind!r} is not supported "
                                 f"(supported: {', '.join(_SUPPORTED_MODELS)})")
    vocab: dict[str, int] = model["vocab"]
    added = data.get("added_tokens") or []
    ids = list(vocab.values()) + [t["id"] for t in added]
    hf_vocab_size = max(ids) + 1 if ids else 0
    markers: dict[str, int] = {}
    for t in added:
        if t["content"] in MARKERS:
            markers[t["content"]] = t["id"]
    new_vocab = {}
    for piece, i in vocab.items():
        if piece in MARKERS:  # a marker inside the model vocabulary: it takes the marker's id
            markers.setdefault(piece, i)
            new_vocab[piece] = st.IDS[piece]
        else:
            new_vocab[piece] = i + OFFSET
    model["vocab"] = new_vocab
    new_added = [dict(t, id=t["id"] + OFFSET) for t in added if t["content"] not in MARKERS]
    new_added += [_marker_token(m, st.IDS[m]) for m in MARKERS]
    data["added_tokens"] = sorted(new_added, key=lambda t: t["id"])
    # The Rust library gives an added token that is not in the model vocabulary the next id after the
    # model's (whatever the JSON says); in the vocabulary, it keeps that entry's id.  A vocabulary entry the
    # merges never build is never produced by the model itself.
    for t in new_added:
        new_vocab[t["content"]] = t["id"]
    data["post_processor"] = _shift_post_processor(data.get("post_processor"), OFFSET)
    if isinstance(data.get("padding"), dict) and "pad_id" in data["padding"]:
        data["padding"]["pad_id"] += OFFSET
    return json.dumps(data, ensure_ascii=False, indent=2), markers, hf_vocab_size


def _word_boundary_mark(data: dict) -> str:
    """``Ġ`` for a byte-level tokenizer, ``▁`` for a metaspace one, else ``""``."""
    def kinds(node) -> Iterable[str]:
        if isinstance(node, dict):
            if "type" in node:
                yield node["type"]
            for value in node.values():
                yield from kinds(value)
        elif isinstance(node, list):
            for value in node:
                yield from kinds(value)

    found = set(kinds([data.get("pre_tokenizer"), data.get("decoder"), data.get("normalizer")]))
    if "ByteLevel" in found:
        return "\u0120"
    normalizer = json.dumps(data.get("normalizer"), ensure_ascii=False)
    if "Metaspace" in found or ("Replace" in found and "\u2581" in normalizer):
        return "\u2581"
    return ""


class HFTokenizerCore(RuntimeTokenizerBase):
    """A Hugging Face tokenizer directory with megatron_t2c's fixed special ids (see the module docstring);
    the same interface as :class:`~megatron_t2c.tokenizer.sentencepiece.T2CTokenizerCore`.

    ``path``: an original HF directory (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) or a canonical
    one written by :meth:`save`.  ``num_threads``: 1 encodes batches in this thread (preprocessing workers);
    more lets the Rust library encode batches in parallel.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1) -> None:
        directory = Path(path)
        if not directory.is_dir() or not ((directory / SIDECAR_FILE).is_file() or is_hf_tokenizer_dir(directory)):
            raise TokenizerLoadError(f"{path}: not a Hugging Face tokenizer directory (tokenizer.json, or "
                                     "vocab.json + merges.txt)")
        self.path = str(path)
        self.num_threads = num_threads
        sidecar = directory / SIDECAR_FILE
        if sidecar.is_file():
            info = json.loads(sidecar.read_text(encoding="utf-8"))
            if info.get("kind") != "huggingface" or info.get("offset") != OFFSET:
                raise TokenizerLoadError(f"{sidecar}: not a megatron_t2c Hugging Face tokenizer with offset {OFFSET}")
            state = {"original": (directory / ORIGINAL_FILE).read_text(encoding="utf-8"),
                     "model_rows": info.get("model_rows"), "source": info.get("source", self.path),
                     "hf_tokenizer_config": info.get("hf_tokenizer_config", {})}
        else:
            state = {"original": _read_original(directory), "model_rows": None, "source": self.path,
                     "hf_tokenizer_config": _read_config(directory)}
        self._load(state)

    def _load(self, state: dict) -> None:
        tokenizers = _tokenizers()
        self._state = state
        self._original = state["original"]
        canonical, self.marker_hf_ids, self.hf_vocab_size = build_canonical(self._original, state["source"])
        self._canonical = canonical
        try:
            self._tok = tokenizers.Tokenizer.from_str(canonical)
        except Exception as exc:  # noqa: BLE001 - the Rust library's error
            raise TokenizerLoadError(f"{state['source']}: cannot load the tokenizer: {exc}") from None
        self.source = state["source"]
        self.hf_tokenizer_config = dict(state.get("hf_tokenizer_config") or {})
        self.model_rows = int(state["model_rows"]) if state.get("model_rows") else self.hf_vocab_size
        self.word_boundary_mark = _word_boundary_mark(json.loads(self._original))
        self._fast = hasattr(self._tok, "encode_batch_fast")
        self._vocab: Optional[dict[str, int]] = None
        self._pieces: Optional[list[str]] = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "num_threads": self.num_threads, "state": self._state}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.num_threads = state["num_threads"]
        self._load(state["state"])

    # -- identity --------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical tokenizer JSON: equal for an original directory and its saved copy."""
        return hashlib.sha256(self._canonical.encode("utf-8")).hexdigest()

    @property
    def unique_identifiers(self) -> OrderedDict:
        """Identity for megatron-core's dataset cache keys: class, path and the fingerprint."""
        return OrderedDict([("class", f"{type(self).__module__}.{type(self).__qualname__}"),
                            ("tokenizer_path", self.path), ("model_sha256", self.fingerprint())])

    def apply_chat_template(self, *args, **kwargs):
        """Not a chat model."""
        raise NotImplementedError(f"{type(self).__name__} has no chat template")

    # -- sizes and vocabulary ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """``OFFSET + max(hf_vocab_size, model_rows)``: internal ids are ``0 .. vocab_size - 1``."""
        return OFFSET + max(self.hf_vocab_size, self.model_rows)

    @property
    def vocab(self) -> dict[str, int]:
        """Piece -> internal id (the HF tokenizer's pieces and added tokens, and the markers)."""
        if self._vocab is None:
            self._vocab = dict(self._tok.get_vocab(with_added_tokens=True))
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Internal id -> piece."""
        return {i: p for p, i in self.vocab.items()}

    def id_to_piece(self, token_id: int) -> str:
        """The piece of one id: the special piece names for 0..3 and 12..14, ``""`` for ids without a token."""
        token_id = int(token_id)
        if token_id in _RESERVED:
            return _RESERVED[token_id]
        piece = self._tok.id_to_token(token_id)
        return "" if piece is None else piece

    # -- id maps -------------------------------------------------------------------------------------
    def to_hf_ids(self, ids) -> np.ndarray:
        """Internal ids -> hf ids (int64): ``id - OFFSET``; a marker -> its recorded hf id, or -1 when the HF
        tokenizer has none; the other ids below OFFSET -> -1."""
        ids = np.asarray(ids, dtype=np.int64)
        table = np.full(OFFSET, -1, np.int64)
        for m, h in self.marker_hf_ids.items():
            table[st.IDS[m]] = h
        low = ids < OFFSET
        return np.where(low, table[np.where(low, ids, 0)], ids - OFFSET)

    def from_hf_ids(self, hf_ids) -> np.ndarray:
        """Hf ids -> internal ids (int64): ``hf + OFFSET``, a recorded marker's hf id -> the marker's id."""
        hf_ids = np.asarray(hf_ids, dtype=np.int64)
        out = hf_ids + OFFSET
        for m, h in self.marker_hf_ids.items():
            out[hf_ids == h] = st.IDS[m]
        return out

    # -- encoding and decoding -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Encode text; marker text (``[descr]``, ``[python]``, ...) becomes the markers' ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Iterable[int]) -> str:
        """Decode ids (a list, tuple or numpy array) to text; ids without a token (0..3, 12..14, unused rows)
        decode to nothing."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        top = OFFSET + self.hf_vocab_size
        kept = [i for i in ids if not (i in _RESERVED or i < 0 or i >= top)]
        return self._tok.decode(kept, skip_special_tokens=False)

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``tokenize`` of many texts: all ids in a row (int32) and each text's length (int64)."""
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self.num_threads == 1:
            rows = [self._tok.encode(t, add_special_tokens=False).ids for t in texts]
        else:
            encode = self._tok.encode_batch_fast if self._fast else self._tok.encode_batch
            rows = [e.ids for e in encode(list(texts), add_special_tokens=False)]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        tokens = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(lengths.sum()))
        return tokens, lengths

    # -- saving --------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, model_rows: Optional[int] = None) -> str:
        """Write the canonical directory: ``tokenizer.json`` (internal ids), the sidecar
        ``t2c_tokenizer.json`` and ``hf_tokenizer.json`` (the original, hf ids); returns the directory."""
        from megatron_t2c.utils.atomic import atomic_open, write_json

        os.makedirs(directory, exist_ok=True)
        rows = int(model_rows) if model_rows is not None else self.model_rows
        for name, text in (("tokenizer.json", self._canonical), (ORIGINAL_FILE, self._original)):
            with atomic_open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        write_json(os.path.join(directory, SIDECAR_FILE), {
            "kind": "huggingface", "offset": OFFSET, "hf_vocab_size": self.hf_vocab_size, "model_rows": rows,
            "marker_hf_ids": dict(self.marker_hf_ids), "source": self.source,
            "hf_tokenizer_config": self.hf_tokenizer_config})
        return str(directory)

    def hf_tokenizer_json(self, markers: Mapping[str, int]) -> str:
        """The ORIGINAL tokenizer (hf ids) with ``markers`` (marker -> hf id) added as special added tokens
        at those ids (a marker the tokenizer already holds is moved to the given id)."""
        data = json.loads(self._original)
        unknown = set(markers) - set(MARKERS)
        if unknown:
            raise ValueError(f"not markers: {sorted(unknown)}")
        added = [t for t in data.get("added_tokens") or [] if t["content"] not in markers]
        model = data.get("model") or {}
        if isinstance(model.get("vocab"), dict):  # a marker already there (an exported tokenizer) moves
            model["vocab"] = {p: i for p, i in model["vocab"].items() if p not in markers}
        taken = {t["id"] for t in added} | set(model.get("vocab", {}).values())
        for m, h in markers.items():
            if h in taken:
                raise ValueError(f"hf id {h} for {m} is already a token of the tokenizer")
        added += [_marker_token(m, int(h)) for m, h in markers.items()]
        data["added_tokens"] = sorted(added, key=lambda t: t["id"])
        if markers and "vocab" in (data.get("model") or {}):  # so that the Rust library keeps these ids
            data["model"]["vocab"].update({m: int(h) for m, h in markers.items()})
        return json.dumps(data, ensure_ascii=False, indent=2)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, hf_vocab_size={self.hf_vocab_size}, "
                f"model_rows={self.model_rows}, marker_hf_ids={self.marker_hf_ids})")

