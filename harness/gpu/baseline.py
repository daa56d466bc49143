"""The peer baseline: transformers' LlamaForCausalLM on our weights, with its own contiguous cache
(MistralForCausalLM, the same architecture with a sliding window, where the decoder has one).

Two uses. As the correctness oracle, `hf_greedy` runs one prompt at a time through
`generate` (greedy, no padding) so the engine's tokens can be compared token for token. As the
throughput peer, `static_batch_generate` is what serving looked like before continuous
batching: fixed-size batches, left-padded, each run until its longest request is done.

The transformers model shares our weight tensors (row slices of the fused projections are
views), so building it costs no extra device memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from harness.gpu.model import DecoderConfig, DecoderWeights


def hf_config(config: DecoderConfig, *, max_position_embeddings: int = 131072):
    """The LlamaConfig of our decoder: same shape, default RoPE, untied head, no biases; a
    MistralConfig with its sliding_window where it has one (transformers reads it as we do:
    the query at position p attends keys p - sliding_window + 1 .. p)."""
    from transformers import LlamaConfig, MistralConfig

    if config.sliding_window is None:
        make = LlamaConfig
    else:
        def make(**fields):
            return MistralConfig(sliding_window=config.sliding_window, **fields)
    return make(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )


def hf_state_dict(config: DecoderConfig, weights: DecoderWeights) -> dict[str, torch.Tensor]:
    """Our weights under transformers' Llama names; every tensor is a view of ours."""
    q_rows = config.num_heads * config.head_dim
    kv_rows = config.num_kv_heads * config.head_dim
    inter = config.intermediate_size
    state = {
        "model.embed_tokens.weight": weights.embed,
        "model.norm.weight": weights.norm,
        "lm_head.weight": weights.lm_head,
    }
    for i, lw in enumerate(weights.layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = lw.attn_norm
        state[p + "post_attention_layernorm.weight"] = lw.mlp_norm
        state[p + "self_attn.q_proj.weight"] = lw.qkv[:q_rows]
        state[p + "self_attn.k_proj.weight"] = lw.qkv[q_rows : q_rows + kv_rows]
        state[p + "self_attn.v_proj.weight"] = lw.qkv[q_rows + kv_rows :]
        state[p + "self_attn.o_proj.weight"] = lw.o
        state[p + "mlp.gate_proj.weight"] = lw.gate_up[:inter]
        state[p + "mlp.up_proj.weight"] = lw.gate_up[inter:]
        state[p + "mlp.down_proj.weight"] = lw.down
    return state


def build_hf_model(config: DecoderConfig, weights: DecoderWeights, *, attn_implementation="sdpa"):
    """A LlamaForCausalLM (MistralForCausalLM under a sliding window) whose parameters are our
    tensors (built on the meta device, then assigned; the rotary table, a non-persistent
    buffer, is rebuilt on the weights' device)."""
    from transformers import LlamaForCausalLM, MistralForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

    cfg = hf_config(config)
    cfg._attn_implementation = attn_implementation
    causal_lm, rotary = ((LlamaForCausalLM, LlamaRotaryEmbedding) if config.sliding_window is None
                         else (MistralForCausalLM, MistralRotaryEmbedding))
    with torch.device("meta"):
        model = causal_lm(cfg)
    model.load_state_dict(hf_state_dict(config, weights), strict=True, assign=True)
    model.model.rotary_emb = rotary(cfg).to(weights.embed.device)
    return model.eval()


@torch.inference_mode()
def hf_greedy(model, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation of one prompt with transformers' generate and its contiguous cache."""
    device = model.lm_head.weight.device
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
    )
    return out[0, ids.shape[1]:].tolist()


@dataclass(frozen=True)
class BaselineResult:
    """Static batching: useful output tokens (each request's own count) over wall seconds."""

    requests: int
    batch_size: int
    output_tokens: int
    generated_tokens: int  # batch rows x max_new_tokens, padding work included
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0


@torch.inference_mode()
def static_batch_generate(
    model, prompts: Sequence[Sequence[int]], output_tokens: Sequence[int], *, batch_size: int,
    deadline: float | None = None,
) -> BaselineResult:
    """Run the requests in arrival order in fixed-size batches: left-padded prompts, greedy,
    max_new_tokens = the batch's largest output. Wall time covers every batch run.

    deadline (time.perf_counter() seconds): no batch is started that the pace of the batches
    before it says would end after it (the first always runs); the result then covers the
    batches run."""
    device = model.lm_head.weight.device
    generated = done = 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        if deadline is not None and first:
            per_batch = (time.perf_counter() - start) / (first // batch_size)
            if time.perf_counter() + per_batch > deadline:
                break
        batch = prompts[first : first + batch_size]
        new = max(output_tokens[first : first + batch_size])
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        model.generate(
            ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, pad_token_id=0,
        )
        generated += len(batch) * new
        done += len(batch)
        sync()
    seconds = time.perf_counter() - start
    return BaselineResult(done, batch_size, int(sum(output_tokens[:done])), generated, seconds)
