"""Inference: the KV-cached batched generator."""
