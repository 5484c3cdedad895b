"""From generated ids to Python: the prompt's code, the whole function and the completion a sample records."""

from __future__ import annotations

from typing import Sequence

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.normalise import denormalise

__all__ = ["prompt_code_ids", "normalised_code", "function_source", "completion_of", "prompt_code_source"]


def prompt_code_ids(prompt: Sequence[int], fmt: str) -> tuple[list[int], list[int]]:
    """The prompt's code as ``(header ids, body ids)``: what the generation continues.

    PanGu: ``([], ids after [python])`` (the whole normalised code so far); PyCodeGPT: ``(ids between [sos]
    and [descr], ids after [python])`` (the normalised code is ``header + " " + body``).
    """
    prompt = list(prompt)
    if st.PYTHON_ID not in prompt:
        raise ValueError("a prompt must contain [python]")
    after = prompt[len(prompt) - prompt[::-1].index(st.PYTHON_ID):]
    if fmt == "pangu":
        return [], after
    if fmt == "pycodegpt":
        if st.SOS_ID not in prompt:
            return [], after
        start = prompt.index(st.SOS_ID) + 1
        end = next((j for j in range(start, len(prompt)) if prompt[j] in (st.DESCR_ID, st.PYTHON_ID)), len(prompt))
        return prompt[start:end], after
    raise ValueError(f"unknown format {fmt!r}")


def normalised_code(tokenizer, prompt: Sequence[int], generated: Sequence[int], fmt: str) -> str:
    """The normalised code of prompt + generation (decoded together: exactly the text the model wrote)."""
    header, body = prompt_code_ids(prompt, fmt)
    body_text = tokenizer.detokenize(list(body) + list(generated))
    if not header:
        return body_text
    return tokenizer.detokenize(header).strip() + " " + body_text.lstrip(" ")


def function_source(tokenizer, prompt: Sequence[int], generated: Sequence[int], fmt: str,
                    indent: str = "    ") -> str:
    """The de-normalised Python of the prompt's code followed by the generation (a whole function)."""
    return denormalise(normalised_code(tokenizer, prompt, generated, fmt), indent)


def completion_of(prompt_code_source: str, function: str, indent: str = "    ") -> str:
    """The source that follows the prompt's code in ``function`` (what a sample record's ``completion`` is).

    ``prompt_code_source`` is the de-normalised prompt code (the signature, or signature + body prefix of an
    incremental prompt), which ends at a line boundary; ``function`` the de-normalised whole.  Then
    ``prompt_code_source + completion == function``; for a plain prompt the completion is the body, indented
    four spaces per level, so ``signature + "\\n" + completion`` is the function.  A generation that goes on
    on the signature's own line (``def f(x): return x``) gets that statement moved to an indented line.
    """
    if function.startswith(prompt_code_source):
        return function[len(prompt_code_source):]
    head = prompt_code_source.rstrip("\n")
    if head and function.startswith(head):  # the last prompt line was continued on the same line
        first, newline, rest = function[len(head):].partition("\n")
        last_line = head.rsplit("\n", 1)[-1]
        level = (len(last_line) - len(last_line.lstrip(" "))) // max(1, len(indent)) + 1
        return indent * level + first.strip() + "\n" + rest
    return function  # should not happen: the generation rewrote the prompt


def prompt_code_source(tokenizer, prompt: Sequence[int], fmt: str, indent: str = "    ") -> str:
    """The de-normalised code of the prompt alone (see :func:`completion_of`)."""
    return function_source(tokenizer, prompt, [], fmt, indent)
