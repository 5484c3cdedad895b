"""The GPT model on megatron-core: architecture config, attention backends, modality row layout, tied output."""
