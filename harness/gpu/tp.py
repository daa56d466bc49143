"""Tensor parallelism inside the decoder: how weights are sharded and how the shards meet again.

Each rank holds a contiguous share of the attention heads and of the MLP's intermediate width
(Megatron's split, in our own code): the fused QKV and gate/up projections are column-parallel
(each rank keeps its heads' rows of q, k and v, and its rows of gate and up), the O and down
projections row-parallel (the matching input columns), so every layer needs two all-reduces, one
after attention and one after the MLP. KV heads are split with the query heads, so each rank's KV
pool holds num_kv_heads / tp heads of every slot and the allocator's block tables serve every
rank unchanged. Embeddings and norms are replicated: a lookup reads only the step's rows.

The lm_head is vocab-parallel: each rank scores its contiguous slice of the vocabulary, and the
greedy token is chosen from every rank's (best logit, its index) pair. Replicating it instead
would make every rank read the whole vocab x hidden matrix at each step, a large share of a
decode step's bytes for an 8B model at tp 4, and measured step times would overstate TP's cost.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from harness.gpu.model import LayerWeights, row_max
from harness.model.config import ConfigError


class ShardError(ConfigError):
    """The model's shape cannot be split evenly over the ranks."""


def check_divisible(config, size: int) -> None:
    """Every split this module makes must be even: heads, KV heads, MLP width and vocab."""
    for name in ("num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
        value = getattr(config, name)
        if value % size:
            raise ShardError(f"tp {size} does not divide {name} {value}; pick a tp that does "
                             "(KV heads are split, never replicated)")


def _rows(w: torch.Tensor, start: int, count: int) -> torch.Tensor:
    # clone: the full matrix is freed once every shard of it is taken.
    return w[start : start + count].clone()


def _cols(w: torch.Tensor, start: int, count: int) -> torch.Tensor:
    return w[:, start : start + count].contiguous()


class TensorParallel:
    """One rank's view of a tensor-parallel group: shards the full weights as they are drawn,
    all-reduces partial sums, picks the greedy token across vocabulary shards, and lines the
    ranks up before a timed step (on the control group, so no device work is involved)."""

    def __init__(self, config, *, rank: int, size: int, group=None, control_group=None) -> None:
        check_divisible(config, size)
        self.config = config
        self.rank = rank
        self.size = size
        self.group = group
        self.control_group = control_group

    # -- sharding the full weights ------------------------------------------------------------

    def shard_layer(self, layer: LayerWeights) -> LayerWeights:
        c, r, n = self.config, self.rank, self.size
        dim = c.head_dim
        q_rows, kv_rows = c.num_heads * dim, c.num_kv_heads * dim
        q_share, kv_share, mlp_share = q_rows // n, kv_rows // n, c.intermediate_size // n
        qkv = torch.cat([
            _rows(layer.qkv, r * q_share, q_share),
            _rows(layer.qkv, q_rows + r * kv_share, kv_share),
            _rows(layer.qkv, q_rows + kv_rows + r * kv_share, kv_share),
        ])
        gate_up = torch.cat([
            _rows(layer.gate_up, r * mlp_share, mlp_share),
            _rows(layer.gate_up, c.intermediate_size + r * mlp_share, mlp_share),
        ])
        return LayerWeights(
            attn_norm=layer.attn_norm, qkv=qkv, o=_cols(layer.o, r * q_share, q_share),
            mlp_norm=layer.mlp_norm, gate_up=gate_up,
            down=_cols(layer.down, r * mlp_share, mlp_share),
        )

    def shard_vocab(self, lm_head: torch.Tensor) -> torch.Tensor:
        share = lm_head.shape[0] // self.size
        return _rows(lm_head, self.rank * share, share)

    # -- where the shards meet ------------------------------------------------------------------

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's partial x (in place; x is a fresh projection output)."""
        dist.all_reduce(x, group=self.group)
        return x

    def greedy(self, logits: torch.Tensor) -> torch.Tensor:
        """The argmax over the whole vocabulary of vocab-sharded logits [S, V / tp], equal on
        every rank. Each rank scatters its (best logit, local index) into its own row of a
        zeroed [tp, 2, S] buffer and one sum all-reduce gathers them (adding zeros is exact;
        a sum is the collective every backend has and CUDA graphs capture). The first rank
        with the largest logit wins, as a full argmax takes the first maximum."""
        best, index = row_max(logits)
        best = best.float()
        gathered = torch.zeros(self.size, 2, best.shape[0], dtype=torch.float32,
                               device=logits.device)
        gathered[self.rank, 0] = best
        gathered[self.rank, 1] = index.float()  # exact: a vocabulary has < 2**24 entries
        dist.all_reduce(gathered, group=self.group)
        winner = gathered[:, 0].argmax(dim=0)
        local = gathered[:, 1].gather(0, winner[None]).squeeze(0)
        return local.long() + winner * logits.shape[-1]

    def align(self) -> None:
        """Wait until every rank has prepared its step, so the leader's timer holds the device
        work of a step and not another rank's host preparation."""
        dist.barrier(group=self.control_group)
