"""The text-to-code GPT: megatron-core's ``GPTModel`` with a modality-split, tied embedding (paper §2.2).

* **Architecture**: :class:`~megatron_t2c.models.config.ModelConfig` (the paper's presets plus overrides).
* **Layers**: megatron's local layer spec with the core attention of :mod:`megatron_t2c.models.attention`.
* **Embedding**: megatron's own ``VocabParallelEmbedding``, sized and laid out by a
  :class:`~megatron_t2c.models.row_layout.RowLayout`; the model's ``input_ids`` are *row* ids
  (``layout.rows(tokens, modality)``).
* **Output** (:meth:`T2CGPTModel._postprocess`): labels stay base-vocabulary ids; positions whose label is
  code are scored with the code-space rows, the others with the base rows (the paper release's "enlarged
  vocabulary + masked softmax" without the enlarged softmax); host synchronisation: :meth:`T2CGPTModel._loss`.
* **Checkpoints** (:meth:`T2CGPTModel.sharded_state_dict`) do not depend on the tensor-parallel size; a
  checkpoint without separation (MAPT) loads into a separated model with ``metadata={BASE_ROWS_ONLY: True}``.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group
from megatron.core.utils import deprecate_inference_params, get_pg_rank, get_pg_size

from megatron_t2c.models.attention import AttentionMask, layer_spec
from megatron_t2c.models.config import ModelConfig, resolve_backend
from megatron_t2c.mrpt.modality import CODE
from megatron_t2c.models.row_layout import RowLayout
from megatron_t2c.models.tied_output import tied_cross_entropy

__all__ = ["BASE_ROWS_ONLY", "make_layout", "build_model", "T2CGPTModel"]

#: ``metadata`` flag of :meth:`T2CGPTModel.sharded_state_dict`: read/write the base rows only (and
#: initialise code rows from them on load) -- for starting MRPT from a checkpoint without separation.
BASE_ROWS_ONLY = "t2c_base_rows_only"


def make_layout(config: ModelConfig, separated, vocab_size: int, tp_size: Optional[int] = None) -> RowLayout:
    """The :class:`RowLayout` for ``separated`` ids at ``tp_size`` (default: the current TP size)."""
    if tp_size is None:
        tp_size = parallel_state.get_tensor_model_parallel_world_size()
    return RowLayout(separated, vocab_size, tp_size, config.make_vocab_size_divisible_by)


def build_model(config: ModelConfig, layout: RowLayout, pre_process: Optional[bool] = None,
                post_process: Optional[bool] = None, *, vp_stage: Optional[int] = None,
                transformer_config: Optional[TransformerConfig] = None) -> "T2CGPTModel":
    """Build this rank's :class:`T2CGPTModel` (its pipeline stage; ``pre/post_process`` default to whether
    it is the first/last stage).  ``transformer_config`` defaults to ``config.transformer_config()``."""
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
    return T2CGPTModel(
        transformer_config or config.transformer_config(),
        layer_spec(config.attention_backend, qkv_bias=config.architecture().qkv_bias), layout,
        config.architecture().seq_length, attention_backend=config.attention_backend,
        pre_process=pre_process, post_process=post_process,
        position_embedding_type=config.position_embedding_type, rotary_base=config.rotary_base,
        vp_stage=vp_stage, chunked_head=config.chunked_head)


def _all_code(label_modality) -> bool:
    """Whether ``label_modality`` is the int ``CODE`` (one output space for every position)."""
    return not isinstance(label_modality, torch.Tensor) and label_modality == CODE


def _code_rows_key(key: str) -> str:
    """``...word_embeddings.weight`` -> ``...word_embeddings.code_rows`` (optimizer prefixes kept)."""
    stem = key[: -len(".weight")] if key.endswith(".weight") else key
    return f"{stem}.code_rows"


class _TiedOutput(torch.autograd.Function):
    """The tied output layer of one tensor-parallel rank, as a single autograd node.

    ``forward(x, weight, code_index, n_code, shard, first_padding_column)``: logits ``[rows, shard]`` of the
    rows of ``x``; the first ``n_code`` rows are scored with the code-space rows ``weight[code_index]``,
    the others with the base rows ``weight[:shard]``; columns from ``first_padding_column`` on (vocabulary
    padding) are ``-inf``.  Their incoming gradient is exactly zero (they carry no probability), so the
    fill needs no backward.

    The same maths as ``index_select`` + two ``F.linear`` + ``cat`` + a masked fill, but the weight
    gradient is written into one buffer: autograd's composition would allocate and add a zero-filled
    table-sized gradient for the slice and another for the gather (measured ~0.3 s of a 5 s pangu-100m
    CPU step).  The gathered code-space matrix is kept for the backward pass (``shard x hidden``).
    """

    @staticmethod
    def forward(ctx, x, weight, code_index, n_code, shard, first_padding_column, gathered=None):
        rows = x.shape[0]
        out = x.new_empty(rows, shard)
        code_weight = None
        if n_code:
            code_weight = gathered if gathered is not None else weight.index_select(0, code_index)
        if n_code:
            torch.mm(x[:n_code], code_weight.t(), out=out[:n_code])
        if n_code < rows:
            torch.mm(x[n_code:], weight[:shard].t(), out=out[n_code:])
        if first_padding_column is not None:
            out[:, first_padding_column:] = float("-inf")
        ctx.save_for_backward(x, weight, code_index, code_weight)
        ctx.n_code, ctx.shard = n_code, shard
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, code_index, code_weight = ctx.saved_tensors
        n_code, shard, rows = ctx.n_code, ctx.shard, x.shape[0]
        grad = grad.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            if n_code:
                torch.mm(grad[:n_code], code_weight, out=grad_x[:n_code])
            if n_code < rows:
                torch.mm(grad[n_code:], weight[:shard], out=grad_x[n_code:])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            if n_code < rows:
                torch.mm(grad[n_code:].t(), x[n_code:], out=grad_weight[:shard])
            else:
                grad_weight[:shard].zero_()
            grad_weight[shard:].zero_()
            if n_code:
                grad_weight.index_add_(0, code_index, grad[:n_code].t().mm(x[:n_code]))
        return grad_x, grad_weight, None, None, None, None, None


class T2CGPTModel(GPTModel):
    """megatron-core's ``GPTModel`` whose tied word-embedding table follows a :class:`RowLayout`.

    Args:
        config, transformer_layer_spec, max_sequence_length, pre_process, post_process,
        position_embedding_type, rotary_base, vp_stage, pg_collection: as for ``GPTModel``.
        layout: the row layout; ``layout.tp_size`` must be the tensor-parallel size.
        attention_backend: the backend of ``transformer_layer_spec``'s core attention (the model converts
            the batch's mask for it once per forward pass).
        chunked_head: compute the losses with :func:`~megatron_t2c.models.tied_output.tied_cross_entropy`
            (the output layer and cross-entropy fused, a chunk of rows at a time; tensor-parallel size 1).
    """

    def __init__(self, config: TransformerConfig, transformer_layer_spec: ModuleSpec, layout: RowLayout,
                 max_sequence_length: int, *, attention_backend: str = "sdpa", pre_process: bool = True,
                 post_process: bool = True, position_embedding_type: str = "learned_absolute",
                 rotary_base: int = 10000, vp_stage: Optional[int] = None, pg_collection=None,
                 chunked_head: bool = False):
        if config.mtp_num_layers:
            raise NotImplementedError("multi-token prediction is not supported")
        super().__init__(config, transformer_layer_spec, vocab_size=layout.table_size,
                         max_sequence_length=max_sequence_length, pre_process=pre_process,
                         post_process=post_process, parallel_output=True,
                         share_embeddings_and_output_weights=True,
                         position_embedding_type=position_embedding_type, rotary_base=rotary_base,
                         vp_stage=vp_stage, pg_collection=pg_collection)
        if layout.tp_size != get_pg_size(self.tp_group):
            raise ValueError(f"layout is for TP={layout.tp_size}, the model runs at TP={get_pg_size(self.tp_group)}")
        if chunked_head and layout.tp_size != 1:
            raise ValueError("the chunked head (chunked_head) needs tensor-parallel size 1")
        self.layout = layout
        self.chunked_head = chunked_head
        self.attention_backend = resolve_backend(attention_backend)
        self.tp_rank = get_pg_rank(self.tp_group)
        if self.post_process:
            self.register_buffer("code_output_index", layout.code_output_index(self.tp_rank), persistent=False)
            self.first_padding_column = layout.first_padding_column(self.tp_rank)
        self.init_code_rows()
        self.register_load_state_dict_pre_hook(self._check_separated_ids)

    # ------------------------------------------------------------------------------------------------
    # Embedding table
    # ------------------------------------------------------------------------------------------------

    def init_code_rows(self) -> None:
        """Make every code row on this stage a copy of its token's base row (a local, in-place copy)."""
        weight = self.shared_embedding_or_output_weight()
        if weight is not None and self.layout.has_code_rows:
            self.layout.init_code_rows(weight.data, self.tp_rank)

    def rows(self, tokens: torch.Tensor, modality: torch.Tensor | int) -> torch.LongTensor:
        """The row ids to pass as ``input_ids`` (see :meth:`RowLayout.rows`)."""
        return self.layout.rows(tokens, modality)

    # ------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------

    def _prepare_attention_mask(self, attention_mask, input_ids):
        """The batch's mask in the form of the attention backend, built once for all layers.

        Activation recompute passes only tensors through its checkpoint function, so with recompute the
        layers receive megatron's tensor and convert it themselves.
        """
        if self.attention_backend not in ("sdpa", "flex") or self.config.recompute_granularity is not None:
            return attention_mask
        if attention_mask is not None:
            batch, seq_length, device = attention_mask.shape[0], attention_mask.shape[-2], attention_mask.device
        elif input_ids is not None:
            (batch, seq_length), device = input_ids.shape, input_ids.device
        else:  # a later pipeline stage: the activations from the previous stage give the shape
            hidden = self.decoder.input_tensor
            (seq_length, batch), device = hidden.shape[:2], hidden.device
        return AttentionMask.prepare(attention_mask, self.attention_backend, batch=batch,
                                     seq_length=seq_length, device=device)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                decoder_input: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                inference_context=None, packed_seq_params=None, extra_block_kwargs: Optional[dict] = None,
                runtime_gather_output: Optional[bool] = None, *, loss_mask: Optional[torch.Tensor] = None,
                label_modality: torch.Tensor | int | None = None, inference_params=None,
                padding_mask: Optional[torch.Tensor] = None):
        """Row ids in, per-token losses (or logits) out.

        Args:
            input_ids: ``[b, s]`` row ids (``layout.rows(tokens, modality)``); None on later pipeline stages.
            position_ids: ``[b, s]``.
            attention_mask: ``[b or 1, 1, s, s]`` bool, True = masked; None = causal.
            labels: ``[b, s]`` base-vocabulary ids of the next tokens, or None for logits.
            loss_mask: ``[b, s]``; positions where it is 0 skip the LM head (their loss is 0).
            label_modality: ``[b, s]`` modality of each label (or an int for all positions): where it is
                ``CODE`` the output uses the code-space rows.  None = base rows everywhere.
            runtime_gather_output: gather the vocab-parallel logits (when ``labels`` is None).

        Returns:
            ``[b, s]`` float32 losses, 0 where ``loss_mask`` is 0 (multiply by ``loss_mask`` and sum, as for
            ``GPTModel``); with ``labels=None`` the logits ``[b, s, Vp/p]`` (``[b, s, Vp]`` gathered) over the
            padded base vocabulary, padding ``-inf``; on a pipeline stage without the output layer, its
            hidden states.
        """
        inference_context = deprecate_inference_params(inference_context, inference_params)
        if packed_seq_params is not None:
            raise NotImplementedError("packed sequences (THD) are not supported: use a document mask")
        attention_mask = self._prepare_attention_mask(attention_mask, input_ids)
        decoder_input, rotary_pos_emb, rotary_pos_cos, rotary_pos_sin, sequence_len_offset, padding_mask = (
            self._preprocess(input_ids=input_ids, position_ids=position_ids, decoder_input=decoder_input,
                             inference_context=inference_context, padding_mask=padding_mask)[:6])
        hidden_states = self.decoder(
            hidden_states=decoder_input, attention_mask=attention_mask, inference_context=inference_context,
            rotary_pos_emb=rotary_pos_emb, rotary_pos_cos=rotary_pos_cos, rotary_pos_sin=rotary_pos_sin,
            sequence_len_offset=sequence_len_offset, padding_mask=padding_mask, **(extra_block_kwargs or {}))
        return self._postprocess(hidden_states, input_ids, position_ids, labels, rotary_pos_emb, rotary_pos_cos,
                                 rotary_pos_sin, loss_mask=loss_mask, label_modality=label_modality,
                                 runtime_gather_output=runtime_gather_output,
                                 inference_context=inference_context)

    def _postprocess(self, hidden_states, input_ids=None, position_ids=None, labels=None, *unused_args,
                     loss_mask=None, label_modality=None, runtime_gather_output=None, inference_context=None,
                     **unused_kwargs):
        """The modality-relative tied output layer and loss.

        Labels stay base-vocabulary ids.  Positions whose label is code (``label_modality == CODE``) score
        the base vocabulary with the code-space rows (each separated token its code row, the others their
        shared row: a local gather with ``code_output_index``); other positions score it with the base rows.
        This equals the paper release's "enlarged vocabulary + masked softmax" without the enlarged softmax.
        Positions without loss never reach the LM head; padded-vocabulary logits are ``-inf``; the loss is
        megatron's ``vocab_parallel_cross_entropy``, or with ``chunked_head`` the output layer and
        cross-entropy fused and chunked (:mod:`megatron_t2c.models.tied_output`).
        """
        if not self.post_process:
            return hidden_states
        if self.config.sequence_parallel:  # backward: reduce-scatter, as in megatron's ColumnParallelLinear
            hidden_states = tensor_parallel.gather_from_sequence_parallel_region(hidden_states, group=self.tp_group)
        if inference_context is not None and not self.training and getattr(
                inference_context, "materialize_only_last_token_logits", False):
            if not inference_context.is_static_batching():
                raise NotImplementedError("dynamic-batching inference is not supported")
            hidden_states = hidden_states[-1:]
            if isinstance(label_modality, torch.Tensor):
                label_modality = label_modality[:, -1:]
        if labels is None:
            return self._logits(hidden_states, label_modality, runtime_gather_output)
        return self._loss(hidden_states, labels, loss_mask, label_modality)

    def _to_tp_region(self, x: torch.Tensor) -> torch.Tensor:
        """Enter the vocab-parallel matmul: identity forward, all-reduced gradient (unless sequence
        parallel, where the gather before already reduce-scatters it)."""
        if self.config.sequence_parallel:
            return x
        return tensor_parallel.copy_to_tensor_model_parallel_region(x, group=self.tp_group)

    def _head(self, x: torch.Tensor, n_code: int) -> torch.Tensor:
        """Logits ``[rows, Vp/p]`` of the rows of ``x``: the first ``n_code`` in the code space, the rest in
        the base space (see :class:`_TiedOutput`)."""
        weight = self.shared_embedding_or_output_weight()
        n_code = n_code if self.layout.has_code_rows else 0
        gathered = None
        if n_code and getattr(self, "_frozen_code_weight", None) is not None and not torch.is_grad_enabled():
            gathered = self._frozen_code_weight
        return _TiedOutput.apply(x, weight, self.code_output_index, n_code, self.layout.shard_size,
                                 self.first_padding_column, gathered)

    @contextlib.contextmanager
    def frozen_output(self):
        """For generation: gather the code-space output matrix once for the whole block (weights must not
        change inside it), instead of copying the table for every decoding step.  Only no-grad forwards
        use it; the gathered copy is dropped on exit."""
        weight = self.shared_embedding_or_output_weight() if self.post_process else None
        if weight is not None and self.layout.has_code_rows:
            self._frozen_code_weight = weight.detach().index_select(0, self.code_output_index)
        try:
            yield self
        finally:
            self._frozen_code_weight = None

    def _logits(self, hidden_states, label_modality, runtime_gather_output):
        """``[b, s, Vp/p]`` logits scored in each position's output space (or gathered ``[b, s, Vp]``)."""
        s, b, h = hidden_states.shape
        x = self._to_tp_region(hidden_states).reshape(s * b, h)
        if isinstance(label_modality, torch.Tensor) and self.layout.has_code_rows:
            is_code = (label_modality == CODE).transpose(0, 1).reshape(s * b, 1)
            logits = torch.where(is_code, self._head(x, s * b), self._head(x, 0))
        else:
            logits = self._head(x, s * b if _all_code(label_modality) else 0)
        logits = logits.view(s, b, -1)
        gather = (not self.parallel_output) if runtime_gather_output is None else runtime_gather_output
        if gather:
            logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits, group=self.tp_group)
        return logits.transpose(0, 1).contiguous()

    def _loss(self, hidden_states, labels, loss_mask, label_modality):
        """Per-token losses: select the positions with loss, code-space ones first, one output node.

        Host synchronisation: with a ``loss_mask`` (or mixed code/non-code labels) the loss path reads two
        counts to the host once per micro-batch (the sizes of the selected position groups; a data-dependent
        shape).  Without a loss mask and with a single output space it does not synchronise.
        """
        s, b, h = hidden_states.shape
        hidden = hidden_states.reshape(s * b, h)  # sequence-major, like hidden_states
        targets = labels.transpose(0, 1).reshape(-1)
        uniform = 0 if _all_code(label_modality) else 1
        group = None  # 0: code output, 1: base output, 2: no loss
        if isinstance(label_modality, torch.Tensor) and self.layout.has_code_rows:
            group = torch.where(label_modality.transpose(0, 1).reshape(-1) == CODE, 0, 1)
        if loss_mask is not None:
            no_loss = loss_mask.transpose(0, 1).reshape(-1) == 0
            group = torch.where(no_loss, 2, uniform if group is None else group)
        if group is None:  # one output space, every position: no selection, no host sync
            loss = self._head_loss(hidden, targets, s * b if uniform == 0 else 0)
            return loss.view(s, b).transpose(0, 1).contiguous()
        n_code, n_base = torch.bincount(group, minlength=3)[:2].tolist()  # the one host sync
        selected = torch.argsort(group, stable=True)[: n_code + n_base]
        loss = self._head_loss(hidden.index_select(0, selected), targets.index_select(0, selected), n_code)
        losses = loss.new_zeros(s * b).index_copy(0, selected, loss)
        return losses.view(s, b).transpose(0, 1).contiguous()

    def _head_loss(self, x: torch.Tensor, targets: torch.Tensor, n_code: int) -> torch.Tensor:
        """fp32 losses ``[rows]`` of the rows of ``x`` (the first ``n_code`` scored in the code space):
        :meth:`_head` then megatron's ``vocab_parallel_cross_entropy``, or, with ``chunked_head``, both
        fused and chunked (:func:`~megatron_t2c.models.tied_output.tied_cross_entropy`)."""
        if self.chunked_head:
            vocab = self.layout.shard_size if self.first_padding_column is None else self.first_padding_column
            return tied_cross_entropy(x, self.shared_embedding_or_output_weight(), self.code_output_index,
                                      n_code if self.layout.has_code_rows else 0, vocab, targets)
        logits = self._head(self._to_tp_region(x), n_code)
        return tensor_parallel.vocab_parallel_cross_entropy(logits, targets)

    # ------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------

    def _table_factory(self, entry: ShardedTensor, base_only: bool) -> ShardedTensorFactory:
        """Save/load this rank's table block as base rows (vocab-sharded) + its slice of the code rows."""
        layout, rank = self.layout, self.tp_rank
        rows, count, offset = layout.shard_size, layout.code_counts[rank], layout.code_offsets[rank]
        local = layout.local_separated(rank)

        def build(key, data, replica_id, flattened_range):
            if flattened_range is not None:
                raise NotImplementedError("flattened checkpoint ranges are not supported")
            pieces = {"base": ShardedTensor.from_rank_offsets(
                key, data[:rows], (0, rank, layout.tp_size), replica_id=replica_id, allow_shape_mismatch=True)}
            if count and not base_only:
                hidden = data.shape[1]
                pieces["code"] = ShardedTensor(
                    key=_code_rows_key(key), data=data[rows:rows + count], dtype=data.dtype,
                    local_shape=(count, hidden), global_shape=(layout.num_separated, hidden),
                    global_offset=(offset, 0), axis_fragmentations=None, replica_id=replica_id)
            return pieces

        def merge(loaded):
            base = loaded["base"]
            block = base.new_zeros(layout.rows_per_rank, base.shape[1])
            block[:rows] = base
            if "code" in loaded:
                block[rows:rows + count] = loaded["code"]
            elif count:  # base rows only: code rows start as copies
                block[rows:rows + count] = base[local.to(base.device)]
            return block

        return ShardedTensorFactory(entry.key, entry.data, build, merge, replica_id=entry.replica_id)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: Optional[dict] = None):
        """megatron's sharded state dict with the table mapped TP-agnostically.

        Checkpoints do not depend on the tensor-parallel size: the base rows are saved as megatron saves a
        GPT word embedding (``embedding.word_embeddings.weight``, the padded base vocabulary, vocab-sharded)
        and the code rows as one global ``[K, hidden]`` tensor (``embedding.word_embeddings.code_rows``)
        written in uneven per-rank pieces, both through one ``ShardedTensorFactory``
        (:meth:`_table_factory`; so optimizer states follow the same mapping).  The separated-id list is
        saved too (``embedding.word_embeddings.separated_ids``) and checked on load
        (:meth:`_check_separated_ids`).  A checkpoint without separation (MAPT) has exactly the layout of a
        stock megatron GPT; load it into a separated model with ``metadata={BASE_ROWS_ONLY: True}`` and every
        code row starts as a copy of its token's row.

        ``metadata[BASE_ROWS_ONLY]``: leave out the code rows and the separated ids (to load a checkpoint
        saved without separation; code rows are then initialised from the loaded base rows).
        """
        metadata = ensure_metadata_has_dp_cp_group(metadata)
        state = super().sharded_state_dict(prefix, sharded_offsets, metadata)
        base_only = bool(metadata.get(BASE_ROWS_ONLY, False))
        table_key = f"{prefix}embedding.word_embeddings.weight"
        if self.layout.has_code_rows:
            for name in (table_key, f"{prefix}output_layer.weight"):
                entry = state.get(name)
                if isinstance(entry, ShardedTensor) and entry.key == table_key:
                    state[name] = self._table_factory(entry, base_only)
        if self.pre_process and not base_only:
            ids_key = f"{prefix}embedding.word_embeddings.separated_ids"
            state[ids_key] = ShardedObject(ids_key, list(self.layout.separated), (1,), (0,),
                                           replica_id=(0, self.tp_rank, get_pg_rank(metadata["dp_cp_group"])))
        return state

    def _check_separated_ids(self, module, state_dict, prefix, local_metadata, strict, missing_keys,
                             unexpected_keys, error_msgs) -> None:
        """load_state_dict pre-hook: a checkpoint's separated ids must be this model's."""
        stored = state_dict.pop(f"{prefix}embedding.word_embeddings.separated_ids", None)
        if stored is not None and list(stored) != list(self.layout.separated):
            error_msgs.append(f"the checkpoint separates {len(stored)} tokens, this model "
                              f"{self.layout.num_separated} (or other ones): build the model with the "
                              f"checkpoint's separation, or load its base rows only ({BASE_ROWS_ONLY})")
