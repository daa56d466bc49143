"""kvharness: kernels for attention over the allocators' paged, segmented KV layout.

reference: gather-then-attend in plain torch, the oracle. paged_decode: the Triton decode
kernel, its segment table and launch heuristics. balanced_decode: the same attention over a
work list (work_list) that shares a step's keys out evenly. paged_prefill: the Triton varlen
causal kernel for prefill chunks over the same cache. kv_write: the Triton store of new K/V
into allocator-chosen slots. Import the submodules directly; this package imports nothing so that
`import kernels` stays cheap and TRITON_INTERPRET can still be set before triton loads.
"""
