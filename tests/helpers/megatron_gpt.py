"""A tiny stock megatron-core GPT, its data and weight copying between parallel layouts (shared by the runtime tests)."""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig

from megatron_t2c.runtime import distributed as parallel

VOCAB, SEQ, MICRO_BATCH = 128, 16, 2
SEED = 1234


# ----------------------------------------------------------------------------------------------------
# Tiny model, data and weight copying
# ----------------------------------------------------------------------------------------------------

def tiny_config(**overrides) -> TransformerConfig:
    """A 2-layer, 32-wide, 4-head fp32 GPT config with the current parallel sizes."""
    values = dict(num_layers=2, hidden_size=32, num_attention_heads=4, hidden_dropout=0.0, attention_dropout=0.0,
                  tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
                  pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
                  pipeline_dtype=torch.float32)
    values.update(overrides)
    return TransformerConfig(**values)


def tiny_gpt(config: TransformerConfig | None = None, **gpt_kwargs) -> GPTModel:
    """A tied-embedding GPT on the local (torch-only) spec, holding this rank's pipeline stage."""
    return GPTModel(config=config or tiny_config(), transformer_layer_spec=get_gpt_layer_local_spec(),
                    vocab_size=VOCAB, max_sequence_length=SEQ, share_embeddings_and_output_weights=True,
                    pre_process=parallel_state.is_pipeline_first_stage(),
                    post_process=parallel_state.is_pipeline_last_stage(), **gpt_kwargs)


def make_batch(seed: int, batch_size: int = MICRO_BATCH) -> dict[str, torch.Tensor]:
    """Random tokens with next-token labels, positions and a causal mask (True = masked)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (batch_size, SEQ + 1), generator=gen)
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:],
            "position_ids": torch.arange(SEQ).expand(batch_size, SEQ),
            "attention_mask": torch.triu(torch.ones(1, 1, SEQ, SEQ, dtype=torch.bool), diagonal=1)}


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token loss of a full (single-stage) model."""
    return model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"]).mean()


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a TP=1/PP=1 model's parameters."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _full_name(model: GPTModel, name: str) -> str:
    """Name of ``name`` (a parameter of this stage) in the single-stage model."""
    if name.startswith("decoder.layers."):
        local = int(name.split(".")[2])
        rest = name.split(".", 3)[3]
        return f"decoder.layers.{model.decoder.layers[local].layer_number - 1}.{rest}"
    if name == "output_layer.weight":  # the last stage's copy of the tied embedding
        return "embedding.word_embeddings.weight"
    return name


def _shard(param: torch.nn.Parameter, full: torch.Tensor) -> torch.Tensor:
    """This tensor-parallel rank's slice of ``full`` for ``param`` (whole ``full`` if not split)."""
    if not getattr(param, "tensor_model_parallel", False):
        return full
    chunks = full.chunk(parallel_state.get_tensor_model_parallel_world_size(), dim=param.partition_dim)
    return chunks[parallel_state.get_tensor_model_parallel_rank()]


def load_full_weights(model: GPTModel, weights: dict[str, torch.Tensor]) -> None:
    """Copy single-partition ``weights`` into a TP/PP-partitioned ``model``."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_shard(param, weights[_full_name(model, name)]))


def reference(**config_overrides) -> tuple[dict[str, torch.Tensor], GPTModel]:
    """Build the TP=1/PP=1 reference model under a fresh model-parallel state; return its weights and it."""
    parallel.initialize_distributed(1, 1, cpu=True, seed=SEED)
    model = tiny_gpt(tiny_config(**config_overrides))
    return full_weights(model), model


def switch_parallel_sizes(tp: int, pp: int, vp: int | None = None) -> None:
    """Re-initialise megatron's model-parallel state with new sizes on the same process group."""
    parallel.destroy_distributed(keep_process_group=True)
    parallel.initialize_distributed(tp, pp, cpu=True, seed=SEED, virtual_pipeline_model_parallel_size=vp)


# ----------------------------------------------------------------------------------------------------
# Set-up and tear-down
# ----------------------------------------------------------------------------------------------------
