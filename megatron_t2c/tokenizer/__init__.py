"""Tokenizers: SentencePiece training and runtime, and the adapter megatron-core consumes."""
