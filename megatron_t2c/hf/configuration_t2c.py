"""Configuration of the text-to-code GPT as a Hugging Face model (``model_type`` ``t2c_gpt``).

Shipped as remote code inside every exported directory whose model needs it (see
:mod:`megatron_t2c.hf.export`); it imports nothing from megatron_t2c.
"""

from __future__ import annotations

from transformers import PretrainedConfig

POSITION_EMBEDDINGS = ("learned_absolute", "rope")


def id_ranges(ids) -> list[list[int]]:
    """Sorted ids as ``[start, end)`` runs: ``[15, 16, 17, 40]`` -> ``[[15, 18], [40, 41]]``."""
    runs: list[list[int]] = []
    for i in sorted(set(int(t) for t in ids)):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


#: ``activation_function`` values (Hugging Face's names; ``gelu_new`` = GELU's tanh approximation).
ACTIVATION_FUNCTIONS = ("gelu", "gelu_new", "relu", "silu", "quick_gelu")


class T2CConfig(PretrainedConfig):
    """The megatron_t2c GPT: pre-LayerNorm blocks, an MLP (exact GELU by default), learned or rotary positions, a
    tied word embedding with an optional second (code-space) row for the separated tokens.

    Layer fields (GPT-2 / GPT-Neo; the defaults are the layers of earlier exports): ``activation_function``
    (:data:`ACTIVATION_FUNCTIONS`), ``qkv_bias`` (False: the qkv projection has no bias parameter),
    ``attention_scale`` (None: ``1/sqrt(head_dim)``; GPT-Neo: 1.0), ``window_size`` (None, or a local layer's
    query at position i sees keys i-window_size .. i: GPT-Neo's window minus one) and ``window_layers`` (None:
    with ``window_size`` every layer is local; else 0/1 per layer, 1 = local).

    Modality fields: ``sample_format`` (``pangu``/``pycodegpt``: which markers switch modality),
    ``separated_id_ranges`` (``[start, end)`` runs of the base ids that have a code row), ``separation``
    (the MRPT mode they came from, informational), ``prefix_lm`` (``prefix-code`` models: the prompt's
    prefix attends to itself both ways) and ``objective`` (informational).
    """

    model_type = "t2c_gpt"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 32000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 1024
    position_embedding_type: str = "learned_absolute"
    rope_theta: float = 10000.0
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu"
    qkv_bias: bool = True
    attention_scale: float | None = None
    window_size: int | None = None
    window_layers: list | None = None
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    sample_format: str = "pangu"
    separation: str = "none"
    separated_id_ranges: list | None = None
    prefix_lm: bool = False
    objective: str = "text-code"
    use_cache: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = 6
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.separated_id_ranges is None:
            self.separated_id_ranges = []
        super().__post_init__(**kwargs)
        if self.position_embedding_type not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding_type must be one of {POSITION_EMBEDDINGS}, "
                             f"not {self.position_embedding_type!r}")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads, and that of "
                             "num_key_value_heads")
        if self.activation_function not in ACTIVATION_FUNCTIONS:
            raise ValueError(f"activation_function must be one of {ACTIVATION_FUNCTIONS}, "
                             f"not {self.activation_function!r}")
        if self.window_size is not None and self.window_size < 0:
            raise ValueError(f"window_size must be None or >= 0, not {self.window_size}")
        if self.window_layers is not None and (len(self.window_layers) != self.num_hidden_layers
                                               or any(v not in (0, 1) for v in self.window_layers)):
            raise ValueError(f"window_layers must hold 0 or 1 for each of the {self.num_hidden_layers} layers, "
                             f"not {self.window_layers}")

    def is_local_layer(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` (0-based) attends within the sliding window."""
        if self.window_size is None:
            return False
        return self.window_layers is None or bool(self.window_layers[layer_idx])

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def separated_ids(self) -> list[int]:
        """The base ids that have a code row, ascending (expanded from ``separated_id_ranges``)."""
        return [i for start, end in self.separated_id_ranges for i in range(start, end)]
