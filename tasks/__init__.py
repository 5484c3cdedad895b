"""Benchmarks, one module per benchmark: :mod:`tasks.humaneval` and :mod:`tasks.mbpp`.

Each loader returns :class:`tasks.base.Problem` s: description, signature, the context a completion needs
before it, the reference body, the tests and the model prompts.  Nothing here executes code.
"""
