"""Nearest neighbours of tokens in the docstring and code embedding spaces, and their t-SNE plots.

The paper's Figures 3 and 5, for any checkpoint (``t2c embeddings``).

A checkpoint's word-embedding table is read in its canonical form (:mod:`megatron_t2c.models.row_layout`):
``base [V, h]`` (one row per token) and ``code [K, h]`` (the code rows of the ``K`` separated tokens).  The
two spaces are those the model itself uses:

* **docstring space**: every token's base row;
* **code space**: a separated token's code row, every other token its base row (the rule of
  ``RowLayout.rows`` for inputs and of ``code_output_index`` for the tied output layer).

Without separation (MAPT, ``--separation none``) the code space *is* the docstring space, and the plots
say so.  Neighbours are the top-``k`` ordinary pieces by cosine similarity in each space (the query itself,
the special pieces ``ids < 15`` and, unless asked for, the byte-fallback pieces ``<0x..>`` excluded).  A
query word is a whole vocabulary piece: ``▁word`` (the piece that starts a word) if the vocabulary has it,
else ``word``.

The table is read straight from the megatron ``torch_dist`` checkpoint (two tensors, no model, no process
group); a checkpoint in another backend is read by building the model (:func:`read_tables_via_model`).
t-SNE is scikit-learn's, with a fixed ``random_state`` (the plots are reproducible), on L2-normalised rows
(Euclidean distance between them orders pairs as cosine similarity does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from typing import Optional, Sequence

import numpy as np

from megatron_t2c.utils.atomic import write_json

__all__ = ["DEFAULT_TOKENS", "EmbeddingSpaces", "read_tables", "read_tables_via_model", "load_spaces",
           "find_token", "candidate_ids", "nearest", "neighbours", "plot_neighbours", "analyse"]

DEFAULT_TOKENS = ("open", "join", "def", "split")
SPACE_MARK = "\u2581"
NUM_SPECIAL = 15  # megatron_t2c.mrpt.modality.NUM_SPECIAL (not imported: that pulls in torch for a constant)
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")
BASE_KEY = "embedding.word_embeddings.weight"
CODE_KEY = "embedding.word_embeddings.code_rows"


@dataclasses.dataclass
class EmbeddingSpaces:
    """The two embedding spaces of one checkpoint (rows for the tokenizer's ``vocab_size`` ids only)."""

    docstring: np.ndarray  # [V, h] base rows
    code: np.ndarray  # [V, h] code-space rows (code row where separated, else the base row)
    separated: tuple[int, ...]  # the separated ids
    separation: str  # the run's separation mode
    pieces: tuple[str, ...]  # id -> piece
    checkpoint: str  # the resolved iteration directory
    info: dict  # t2c_run.json

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)


def read_tables(path: str) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """``(base [Vp, h], code [K, h] or None, run info)`` of the checkpoint at ``path`` (a run directory or
    an iteration directory), read directly from its ``torch_dist`` files; other backends go through
    :func:`read_tables_via_model`."""
    from megatron_t2c.training.checkpointing import read_run_info, resolve

    ckpt = resolve(path)
    info = read_run_info(ckpt)
    try:
        with open(os.path.join(ckpt, "metadata.json"), encoding="utf-8") as fh:
            backend = json.load(fh).get("sharded_backend")
    except (OSError, json.JSONDecodeError):
        backend = None
    if backend != "torch_dist":
        return read_tables_via_model(ckpt)
    import torch
    import torch.distributed.checkpoint as dcp

    from megatron_t2c.utils.dist_checkpoint import load_in_this_process

    reader = dcp.FileSystemReader(ckpt)
    metadata = reader.read_metadata().state_dict_metadata
    keys = [BASE_KEY] + ([CODE_KEY] if info["separated_ids"] else [])
    missing = [k for k in keys if k not in metadata]
    if missing:
        return read_tables_via_model(ckpt)
    state = {k: torch.empty(metadata[k].size, dtype=metadata[k].properties.dtype) for k in keys}
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process"
        warnings.simplefilter("ignore")
        load_in_this_process(state, reader)
    base = state[BASE_KEY].float().numpy()
    code = state[CODE_KEY].float().numpy() if CODE_KEY in state else None
    return base, code, info


def read_tables_via_model(path: str) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """The same as :func:`read_tables` by building the model at TP=1 on the CPU and loading the checkpoint
    into it (initialises a one-process gloo world unless megatron's parallel state already exists)."""
    from megatron.core import parallel_state

    from megatron_t2c.runtime import distributed as parallel
    from megatron_t2c.training.checkpointing import model_from_checkpoint

    own = not parallel_state.model_parallel_is_initialized()
    if own:
        parallel.initialize_distributed(1, 1, cpu=True, seed=0)
    try:
        model, info = model_from_checkpoint(path)
        weight = model.shared_embedding_or_output_weight().detach()
        base, code = model.layout.from_local(weight, 0)
        return base.float().numpy().copy(), (code.float().numpy().copy() if code.numel() else None), info
    finally:
        if own:
            parallel.destroy_distributed()


def load_spaces(path: str, tokenizer_model: Optional[str] = None) -> EmbeddingSpaces:
    """Both spaces of the checkpoint at ``path``; the tokenizer defaults to the one stored with it."""
    from megatron_t2c.training.checkpointing import resolve, tokenizer_path
    from megatron_t2c.tokenizer.loading import open_tokenizer

    ckpt = resolve(path)
    base, code, info = read_tables(ckpt)
    tokenizer = open_tokenizer(tokenizer_model or tokenizer_path(ckpt))
    vocab = tokenizer.vocab_size
    if vocab != info["vocab_size"]:
        raise ValueError(f"the tokenizer has {vocab} pieces, the checkpoint {info['vocab_size']}")
    separated = tuple(int(i) for i in info["separated_ids"])
    docstring = np.ascontiguousarray(base[:vocab])
    code_space = docstring.copy()
    if separated:
        if code is None or code.shape[0] != len(separated):
            raise ValueError(f"{ckpt}: expected {len(separated)} code rows")
        code_space[list(separated)] = code
    pieces = tuple(tokenizer.id_to_piece(i) for i in range(vocab))
    return EmbeddingSpaces(docstring, code_space, separated, info.get("separation", "none"), pieces, ckpt, info)


def find_token(pieces: Sequence[str], word: str) -> Optional[int]:
    """The id of the piece ``▁word``, else of ``word``, else None."""
    index = {p: i for i, p in enumerate(pieces)} if not isinstance(pieces, dict) else pieces
    for piece in (word if word.startswith(SPACE_MARK) else SPACE_MARK + word, word):
        if piece in index:
            return index[piece]
    return None


def candidate_ids(pieces: Sequence[str], include_bytes: bool = False) -> np.ndarray:
    """Ids that may be neighbours: ordinary pieces (no special pieces; no byte pieces unless asked)."""
    return np.array([i for i, p in enumerate(pieces)
                     if i >= NUM_SPECIAL and (include_bytes or not _BYTE_PIECE.match(p))], dtype=np.int64)


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def nearest(space: np.ndarray, query: int, candidates: np.ndarray, k: int = 20) -> list[tuple[int, float]]:
    """The ``k`` candidates most cosine-similar to row ``query`` (itself excluded), best first; ties by id."""
    candidates = candidates[candidates != query]
    unit = _normalised(space[candidates].astype(np.float64))
    q = _normalised(space[query].astype(np.float64))
    sims = unit @ q
    order = np.lexsort((candidates, -sims))[:k]
    return [(int(candidates[i]), float(sims[i])) for i in order]


def neighbours(spaces: EmbeddingSpaces, words: Sequence[str] = DEFAULT_TOKENS, k: int = 20,
               include_bytes: bool = False) -> dict:
    """Top-``k`` neighbours of each word in both spaces (a JSON-ready dict; words not in the vocabulary
    are listed under ``missing``)."""
    candidates = candidate_ids(spaces.pieces, include_bytes)
    index = {p: i for i, p in enumerate(spaces.pieces)}
    separated = set(spaces.separated)
    out: dict = {"checkpoint": spaces.checkpoint, "iteration": spaces.info.get("iteration"),
                 "separation": spaces.separation, "num_separated": len(spaces.separated),
                 "same_spaces": not spaces.separated, "k": k, "tokens": [], "missing": []}
    for word in words:
        token = find_token(index, word)
        if token is None:
            out["missing"].append(word)
            continue
        entry: dict = {"word": word, "id": token, "piece": spaces.pieces[token], "separated": token in separated}
        for name in ("docstring", "code"):
            space = getattr(spaces, name)
            entry[name] = [{"id": i, "piece": spaces.pieces[i], "cosine": round(s, 6)}
                           for i, s in nearest(space, token, candidates, k)]
        doc_ids = {n["id"] for n in entry["docstring"]}
        entry["shared_neighbours"] = sum(n["id"] in doc_ids for n in entry["code"])
        out["tokens"].append(entry)
    return out


def _tsne(rows: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of L2-normalised rows (deterministic for a seed)."""
    from sklearn.manifold import TSNE

    n = rows.shape[0]
    if n < 3:
        return np.stack([np.arange(n, dtype=float), np.zeros(n)], axis=1)
    perplexity = float(max(1.0, min(30.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method="exact",
                max_iter=1000)
    return tsne.fit_transform(_normalised(rows.astype(np.float64)))


def _label(piece: str) -> str:
    return piece.replace(SPACE_MARK, "_") if piece else "''"


def plot_neighbours(spaces: EmbeddingSpaces, result: dict, output: str, *, title: str = "",
                    words: Optional[Sequence[str]] = None, seed: int = 0) -> str:
    """One PNG with two panels (docstring space, code space): a t-SNE of the query tokens of ``result``
    (or only ``words``) and their neighbours in that space; queries are stars, every point is labelled
    with its piece (``▁`` shown as ``_``) and coloured by its query."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in result["tokens"] if words is None or e["word"] in words]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes, ("docstring", "code")):
        ids: list[int] = []
        group: dict[int, int] = {}
        for g, e in enumerate(entries):
            for token in [e["id"]] + [n["id"] for n in e[name]]:
                if token not in group:
                    group[token] = g
                    ids.append(token)
        if not ids:
            ax.set_axis_off()
            continue
        xy = _tsne(getattr(spaces, name)[ids], seed)
        queries = {e["id"] for e in entries}
        for j, token in enumerate(ids):
            colour = colours(group[token] % 10)
            is_query = token in queries
            ax.scatter(xy[j, 0], xy[j, 1], s=160 if is_query else 18, marker="*" if is_query else "o",
                       color=colour, edgecolors="black" if is_query else "none", zorder=3 if is_query else 2)
            ax.annotate(_label(spaces.pieces[token]), xy[j], fontsize=10 if is_query else 7,
                        fontweight="bold" if is_query else "normal", color=colour,
                        xytext=(3, 3), textcoords="offset points")
        space_title = "docstring space (base rows)" if name == "docstring" else "code space"
        if name == "code":
            if not spaces.separated:
                space_title += " = docstring space (no separation)"
            else:
                sep = [e["word"] for e in entries if e["separated"]]
                space_title += f" ({spaces.separation}: separated queries {', '.join(sep) or 'none'})"
        ax.set_title(space_title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="*", linestyle="", markersize=12, color=colours(g % 10),
                          label=f"{e['word']} ({_label(e['piece'])})") for g, e in enumerate(entries)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    k = result.get("k")
    fig.suptitle(title or f"top-{k} cosine neighbours, t-SNE ({result.get('separation')})", fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def analyse(checkpoint: str, output_prefix: str, *, words: Sequence[str] = DEFAULT_TOKENS, k: int = 20,
            tokenizer_model: Optional[str] = None, include_bytes: bool = False, per_token: bool = False,
            name: Optional[str] = None, seed: int = 0) -> dict:
    """Neighbours of ``words`` in both spaces of ``checkpoint``: writes ``PREFIX.json`` and ``PREFIX.png``
    (all words; with ``per_token`` also ``PREFIX_<word>.png``); returns the JSON dict with the file paths."""
    spaces = load_spaces(checkpoint, tokenizer_model)
    result = neighbours(spaces, words, k, include_bytes)
    label = name or os.path.basename(os.path.dirname(os.path.dirname(spaces.checkpoint))) or spaces.checkpoint
    note = ("no separation: code space = docstring space" if not spaces.separated
            else f"separation {spaces.separation}, {len(spaces.separated)} code rows")
    title = f"{label} (iteration {result['iteration']}): top-{k} cosine neighbours, t-SNE; {note}"
    result["name"] = label
    result["png"] = plot_neighbours(spaces, result, output_prefix + ".png", title=title, seed=seed)
    if per_token:
        result["token_pngs"] = {}
        for e in result["tokens"]:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", e["word"])
            result["token_pngs"][e["word"]] = plot_neighbours(
                spaces, result, f"{output_prefix}_{safe}.png", words=[e["word"]], seed=seed,
                title=f"{label}: '{e['word']}' ({_label(e['piece'])}); {note}")
    result["json"] = output_prefix + ".json"
    write_json(result["json"], result)
    return result


def format_markdown(result: dict, max_shown: int = 10) -> str:
    """A short table per query: its first neighbours in both spaces."""
    lines = []
    for e in result["tokens"]:
        sep = "separated" if e["separated"] else "not separated"
        lines.append(f"- `{e['piece']}` ({sep}; {e['shared_neighbours']}/{len(e['code'])} code-space "
                     f"neighbours also docstring-space ones)")
        for space in ("docstring", "code"):
            shown = ", ".join(f"`{n['piece']}`" for n in e[space][:max_shown])
            lines.append(f"  - {space}: {shown}")
    if result.get("missing"):
        lines.append(f"- not in the vocabulary: {', '.join(result['missing'])}")
    return "\n".join(lines)
