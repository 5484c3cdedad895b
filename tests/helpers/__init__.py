"""Helpers shared by the tests: stdlib corpora, tiny tokenizers and models, multi-rank runs."""
