"""Utilities: atomic files, JSONL records, dataclass configs as command-line flags."""
