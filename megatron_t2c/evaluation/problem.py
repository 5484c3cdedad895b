"""The benchmark problem record shared by :mod:`megatron_t2c.evaluation.tasks.humaneval` and :mod:`megatron_t2c.evaluation.tasks.mbpp`.

The executed program for a completion is ``context + signature + completion + tail`` followed by
``tests``; :meth:`Problem.program` builds it (as text: nothing here runs it).  ``reference`` is a body
that fits after ``signature`` (source with its original indentation).
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_t2c.mrpt.formats import Segment, sample_text
from megatron_t2c.evaluation.prompts import IncrementalPrompt, format_prompt, incremental_prompts
from megatron_t2c.mrpt.normalise import normalise, split_signature


@dataclass(frozen=True)
class Problem:
    """One benchmark problem (see the module docstrings of the benchmarks for where each field comes from)."""

    task_id: str
    entry_point: str  # the tested function's name
    description: str  # natural-language statement, whitespace collapsed
    signature: str  # the tested function's ``def`` header as source (no trailing newline)
    context: str  # source that must precede the function in the executed program ("" if none)
    reference: str  # the reference body as source, indented to follow ``signature``
    tests: str  # the test program text, run after the solution
    tail: str = ""  # reference source after the tested function (MBPP helpers defined later), "" if none

    @property
    def function(self) -> str:
        """The reference function: signature and body."""
        return self.signature + "\n" + self.reference.rstrip("\n") + "\n"

    @property
    def normalised_signature(self) -> str:
        """The signature normalised as in training samples (``split_signature(normalise(function))[0]``)."""
        return split_signature(normalise(self.function))[0]

    def prompt(self, fmt: str = "pangu") -> tuple[Segment, ...]:
        """Prompt segments: ``[descr] d [python] sig`` (pangu) or ``[sos] sig [descr] d [python]`` (pycodegpt)."""
        return format_prompt(self.description, self.normalised_signature, fmt)

    def prompt_text(self, fmt: str = "pangu") -> str:
        """The prompt as one string."""
        return sample_text(self.prompt(fmt))

    def incremental(self) -> list[IncrementalPrompt]:
        """The incremental prompts (paper §3.4) of this problem."""
        return incremental_prompts(self.task_id, self.description, self.function)

    def program(self, function_source: str | None = None) -> str:
        """Program text: context, the function (the reference by default), tail, then the tests."""
        parts = [self.context, function_source if function_source is not None else self.function,
                 self.tail, self.tests]
        return "\n".join(p.rstrip("\n") for p in parts if p.strip()) + "\n"
