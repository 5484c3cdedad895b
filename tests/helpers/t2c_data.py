"""Real test data for the formats, tokenizer and preprocessing tests: functions of the standard library.

Records have the extraction schema (``id path kind name signature docstring code normalised``); ``code``
is the definition's source lines, dedented (docstrings are not removed, which the formats do not need) and
``normalised`` from :func:`megatron_t2c.mrpt.normalise.normalise`.  Everything is cached per test session.
"""

from __future__ import annotations

import ast
import atexit
import functools
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from megatron_t2c.mrpt.normalise import normalise, split_signature

#: Modules the fixture corpus is drawn from: small, varied, with and without docstrings.
MODULES = ("json", "textwrap", "argparse", "collections", "string", "shlex", "fnmatch", "base64")


def _module_path(name: str) -> Path:
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = stdlib / name / "__init__.py"
    return package if package.exists() else stdlib / f"{name}.py"


def records_from_source(source: str, path: str) -> list[dict]:
    """One record per function, method and class of ``source``, in source order."""
    tree = ast.parse(source)
    source_lines = source.split("\n")  # ast numbers lines by "\n" only, unlike str.splitlines
    out = []
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    for node in nodes:
        start = node.decorator_list[0] if node.decorator_list else node
        code = textwrap.dedent("\n".join(source_lines[start.lineno - 1:node.end_lineno]) + "\n")
        if isinstance(node, ast.ClassDef):
            kind = "class"
        else:
            kind = "method" if isinstance(parents.get(node), ast.ClassDef) else "function"
        normalised = normalise(code)
        out.append({
            "id": f"{path}:{node.lineno}", "path": path, "kind": kind, "name": node.name,
            "signature": split_signature(normalised)[0], "docstring": ast.get_docstring(node),
            "code": code, "normalised": normalised,
        })
    return out


@functools.lru_cache(maxsize=None)
def stdlib_records(modules: tuple[str, ...] = MODULES) -> tuple[dict, ...]:
    """Records of every definition in ``modules`` (about 600 for the default modules)."""
    out: list[dict] = []
    for name in modules:
        path = _module_path(name)
        out.extend(records_from_source(path.read_text(encoding="utf-8"), f"{name}/{path.name}"))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def session_dir() -> Path:
    """A temporary directory for the whole test session, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="t2c-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def write_jsonl(path: Path, records, extra_lines: dict[int, str] | None = None) -> Path:
    """Write records one per line; ``extra_lines`` maps 0-based positions to raw lines inserted there."""
    lines = [json.dumps(r) for r in records]
    for pos, raw in sorted((extra_lines or {}).items()):
        lines.insert(pos, raw)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@functools.lru_cache(maxsize=None)
def corpus_jsonl() -> Path:
    """The fixture corpus as a JSONL file."""
    return write_jsonl(session_dir() / "corpus.jsonl", stdlib_records())


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(model_type: str = "bpe", vocab_size: int = 1500, fmt: str = "pangu") -> Path:
    """A small SentencePiece model trained on the fixture corpus (about a second)."""
    from megatron_t2c.tokenizer.train import train_tokenizer

    prefix = session_dir() / f"tok-{model_type}-{vocab_size}-{fmt}"
    train_tokenizer(corpus_jsonl(), prefix, vocab_size=vocab_size, model_type=model_type, fmt=fmt)
    return prefix.with_suffix(".model")
