"""Greedy tokens through the engine equal transformers' LlamaForCausalLM on the same weights,
for every allocator, with preemption by recompute and by swap, forks and prefix-cache hits; and
MistralForCausalLM's under a sliding window, with the blocks behind it let go."""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.gpu.baseline import build_hf_model, hf_greedy  # noqa: E402
from harness.gpu.executor import build_decoder  # noqa: E402
from harness.gpu.prompts import prompt_tokens  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402

# Budgets (slots) small enough to force preemptions of every kind on the traces below; static
# reserves prompt + output per sample, so it needs more to finish every request.
CPU_BUDGETS = {"static": 160, "paged": 100, "segmented": 100, "hybrid": 100}
GPU_BUDGETS = {"static": 1600, "paged": 600, "segmented": 600, "hybrid": 600}
ALLOCATORS = {
    "static": {},
    "paged": {"block_size": 4},
    "segmented": {"segment_tokens": 64},
    "hybrid": {"block_size": 4, "segment_tokens": 64},
}


def reference_outputs(decoder, trace, seed=0):
    """transformers' greedy tokens for every request, prompt by prompt (no padding)."""
    hf = build_hf_model(decoder.config, decoder.weights)
    hashes = trace["prefix_hashes"].tolist()
    chunk = trace.attrs["chunk_tokens"]
    out = {}
    for rid, (p, o) in enumerate(zip(trace.prompt_tokens, trace.output_tokens)):
        prompt = prompt_tokens(rid, int(p), decoder.config.vocab_size, seed=seed,
                               prefix_hashes=hashes[rid], chunk_tokens=chunk)
        out[rid] = hf_greedy(hf, prompt.tolist(), int(o))
    return out


def check_run(decoder, trace, allocator, params, *, budget, preemption, model="tiny",
              batched_tokens=48, max_model_len=None):
    preset = model_preset(model)
    config = RunConfig(
        model=dataclasses.replace(preset, sliding_window=decoder.config.sliding_window,
                                  max_model_len=max_model_len or preset.max_model_len),
        allocator=AllocatorConfig.of(allocator, **params),
        scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=batched_tokens,
                                  preemption=preemption),
        budget_slots_override=budget,
    )
    result, executor = run_on_device(config, trace, decoder)
    return result, executor.outputs(), executor.details


def assert_same_tokens(trace, result, outputs, refs):
    requests = result.requests
    completed = requests.index[requests.status == "completed"].tolist()
    assert len(completed) == len(trace)
    for rid in completed:
        assert outputs[rid][: len(refs[rid])] == refs[rid], f"request {rid}"
    next_child = len(trace)
    for rid, n in enumerate(trace.n.tolist()):
        for child in range(next_child, next_child + n - 1):
            if rid in completed:
                assert outputs[child][: len(refs[rid])] == refs[rid], f"request {rid} child"
        next_child += n - 1


@pytest.fixture(scope="module")
def forked_trace(small_trace):
    return small_trace(1, 8, n=[1, 1, 3, 1, 1, 2, 1, 1], max_prompt=50, max_output=24)


@pytest.fixture(scope="module")
def forked_refs(tiny_decoder, forked_trace):
    return reference_outputs(tiny_decoder, forked_trace)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_engine_matches_transformers_under_preemption(
    tiny_decoder, forked_trace, forked_refs, allocator, preemption
):
    result, outputs, details = check_run(
        tiny_decoder, forked_trace, allocator, ALLOCATORS[allocator],
        budget=CPU_BUDGETS[allocator], preemption=preemption,
    )
    assert result.summary["preemptions"] > 0  # the budget is small enough to force them
    if preemption == "swap":
        assert details["swapped_out_seqs"] > 0
    assert_same_tokens(forked_trace, result, outputs, forked_refs)


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_prefix_cache_hits_reuse_real_kv(tiny_decoder, small_trace, allocator):
    shared = (11, 12, 13)
    hashes = [shared[: 1 + i % 3] + (100 + i,) for i in range(6)]
    trace = small_trace(2, 6, prefix_hashes=hashes, chunk_tokens=8, max_prompt=30)
    refs = reference_outputs(tiny_decoder, trace)
    result, outputs, _ = check_run(tiny_decoder, trace, allocator, ALLOCATORS[allocator],
                                   budget=4096, preemption="recompute")
    assert result.summary["prefix_hit_tokens"] > 0
    assert_same_tokens(trace, result, outputs, refs)


# Steps of 10 tokens for up to 8 requests and 112 slots: prompts of up to 64 tokens prefill over
# several steps while the requests admitted before them decode, and those decodes outgrow the
# budget midway through the prefills.
CHAINED_BUDGET = 112
CHAINED_STEP_TOKENS = 10


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_prefix_hits_after_preemptions_midway_through_prefill(
    tiny_decoder, chained_prefix_trace, prefill_preemptions, allocator
):
    """A request preempted midway through its chunked prefill leaves no prefix-cache entry over
    KV never written, and a recomputed one none over its generated tokens: the hits that follow
    (its own when it is admitted again, the longer prompts' of its family) read the prompt's
    real KV, so every request's tokens equal those of a run without the prefix cache."""
    trace = chained_prefix_trace(10, 8)

    def run(**params):
        result, outputs, _ = check_run(
            tiny_decoder, trace, allocator, {**ALLOCATORS[allocator], **params},
            budget=CHAINED_BUDGET, preemption="recompute", batched_tokens=CHAINED_STEP_TOKENS)
        assert (result.requests.status == "completed").all()
        return result.summary, outputs

    summary, outputs = run()
    assert summary["prefix_hit_tokens"] > 0
    assert summary["preemptions"] > 0
    assert prefill_preemptions[0] > 0
    _, plain = run(enable_prefix_cache=False)
    assert [rid for rid in range(len(trace)) if outputs[rid] != plain[rid]] == []


GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@GPU_ONLY
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_gpu_engine_matches_transformers_1b(small_trace, allocator, preemption):
    """The Triton kernels at the llama3.2-1b shape in float32 (IEEE dots): token for token."""
    torch.backends.cuda.matmul.allow_tf32 = False
    decoder = _gpu_decoder()
    trace = small_trace(3, 10, n=[1, 1, 2, 1, 1, 1, 3, 1, 1, 1], max_prompt=300, max_output=24)
    refs = _gpu_refs(decoder, trace)
    params = {**ALLOCATORS[allocator]}
    if "segment_tokens" in params:
        params["segment_tokens"] = 512
    result, outputs, details = check_run(decoder, trace, allocator, params,
                                         budget=GPU_BUDGETS[allocator], preemption=preemption,
                                         model="llama3.2-1b", batched_tokens=256,
                                         max_model_len=512)  # static reserves it per request
    assert result.summary["preemptions"] > 0
    if preemption == "swap":
        assert details["swapped_out_seqs"] > 0
    assert_same_tokens(trace, result, outputs, refs)


_GPU_CACHE: dict = {}


def _gpu_decoder():
    if "decoder" not in _GPU_CACHE:
        _GPU_CACHE["decoder"] = build_decoder(model_preset("llama3.2-1b"), device="cuda",
                                              dtype="float32", seed=0)
    return _GPU_CACHE["decoder"]


def _gpu_refs(decoder, trace):
    key = ("refs", trace.attrs["name"])
    if key not in _GPU_CACHE:
        _GPU_CACHE[key] = reference_outputs(decoder, trace)
    return _GPU_CACHE[key]


@pytest.mark.parametrize("allocator", ["static", "hybrid"])
def test_triton_kernels_give_the_reference_tokens(tiny_decoder, small_trace, allocator):
    """The GPU path (write_kv, paged_decode, warmup) through the engine; on a CPU the Triton
    interpreter runs it."""
    from harness.gpu.attention import ReferenceAttention, TritonAttention
    from harness.gpu.model import Decoder

    trace = small_trace(4, 3, max_prompt=20, max_output=6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = build_decoder(model_preset("tiny"), device=device, dtype="float32").weights
    decoders = [Decoder(tiny_decoder.config, weights, backend())
                for backend in (ReferenceAttention, TritonAttention)]
    runs = [check_run(d, trace, allocator, ALLOCATORS[allocator], budget=CPU_BUDGETS[allocator],
                      preemption="recompute") for d in decoders]
    assert runs[1][2]["attention"] == "triton"
    assert runs[0][1] == runs[1][1]


def test_triton_chunked_prefill_after_prefix_hits(tiny_decoder, small_trace):
    """Prefill chunks after prefix-cache hits and after earlier chunks, mixed with decode rows
    in one step, through the Triton kernels: the reference backend's tokens."""
    from harness.gpu.attention import ReferenceAttention, TritonAttention
    from harness.gpu.model import Decoder

    shared = (21, 22)
    hashes = [shared[: 1 + i % 2] + (200 + i,) for i in range(4)]
    trace = small_trace(5, 4, prefix_hashes=hashes, chunk_tokens=8, max_prompt=30, max_output=5)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = build_decoder(model_preset("tiny"), device=device, dtype="float32").weights
    runs = [check_run(Decoder(tiny_decoder.config, weights, backend()), trace, "paged",
                      ALLOCATORS["paged"], budget=4096, preemption="recompute",
                      batched_tokens=12)
            for backend in (ReferenceAttention, TritonAttention)]
    assert runs[1][0].summary["prefix_hit_tokens"] > 0
    assert runs[0][1] == runs[1][1]


WINDOW = 8  # far below the trace's contexts (up to 73 tokens): most KV lies behind it
# Budgets under which the window run still preempts (static keeps every token; the others
# give back what slides past): a whole prompt must fit at admission. Segmented's one-token
# pages go as fast as decoding takes new ones, so once admitted nothing ever needs room.
WINDOW_BUDGETS = {"static": 160, "paged": 56, "segmented": 52, "hybrid": 56}


def windowed(decoder, backend=None):
    """The decoder with a sliding window of WINDOW keys (its weights; its backend, or one)."""
    from harness.gpu.model import Decoder

    config = dataclasses.replace(decoder.config, sliding_window=WINDOW)
    return Decoder(config, decoder.weights, backend or decoder.backend)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_engine_matches_mistral_under_a_sliding_window(
    tiny_decoder, forked_trace, forked_refs, allocator, preemption
):
    """Greedy tokens equal MistralForCausalLM's with the same window, while the allocators let
    the blocks behind it go (the executor's tables then read NO_BLOCK there) and swaps move
    only the window."""
    decoder = windowed(tiny_decoder)
    refs = _window_refs(decoder, forked_trace)
    result, outputs, details = check_run(
        decoder, forked_trace, allocator, ALLOCATORS[allocator],
        budget=WINDOW_BUDGETS[allocator], preemption=preemption,
    )
    preempted = allocator != "segmented"
    assert (result.summary["preemptions"] > 0) == preempted
    if preemption == "swap":
        assert (details["swapped_out_seqs"] > 0) == preempted
    steps = result.steps[result.steps["prefill_tokens"] == 0]  # admission takes whole prompts
    assert (steps["live"] <= steps["running"] * WINDOW).all()
    if allocator == "static":
        assert steps["stale"].max() > 0
    else:  # less than a block of 4 per sequence
        assert (steps["stale"] < steps["running"] * 4).all()
    assert refs != forked_refs  # the window changes the tokens: the test can tell
    assert_same_tokens(forked_trace, result, outputs, refs)


_WINDOW_REFS: dict = {}


def _window_refs(decoder, trace):
    key = trace.attrs["name"]
    if key not in _WINDOW_REFS:
        _WINDOW_REFS[key] = reference_outputs(decoder, trace)
    return _WINDOW_REFS[key]


@pytest.mark.parametrize("allocator", ["static", "segmented"])
def test_triton_kernels_under_a_window_give_the_reference_tokens(tiny_decoder, small_trace,
                                                                 allocator):
    """The windowed kernels through the engine, prefill chunks mixed with decode rows, blocks
    behind the window let go: the reference backend's tokens."""
    from harness.gpu.attention import ReferenceAttention, TritonAttention
    from harness.gpu.model import Decoder

    trace = small_trace(6, 3, max_prompt=30, max_output=8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = build_decoder(model_preset("tiny"), device=device, dtype="float32").weights
    runs = [check_run(windowed(Decoder(tiny_decoder.config, weights, backend())), trace,
                      allocator, ALLOCATORS[allocator], budget=4096, preemption="recompute",
                      batched_tokens=12)
            for backend in (ReferenceAttention, TritonAttention)]
    assert runs[1][2]["attention"] == "triton"
    assert runs[0][1] == runs[1][1]


def test_drawing_prompts_is_no_part_of_a_steps_host_preparation(tiny_decoder, small_trace,
                                                                monkeypatch):
    """A server receives a request's tokens with it: the harness draws them before it times
    the step's host work, and the tokens are the same."""
    import time

    import harness.gpu.executor as executor_module

    trace = small_trace(5, 4)
    _, plain, _ = check_run(tiny_decoder, trace, "paged", ALLOCATORS["paged"], budget=4096,
                            preemption="recompute")
    delay_s = 0.2

    def slow_prompt(*args, **kwargs):
        time.sleep(delay_s)
        return prompt_tokens(*args, **kwargs)

    monkeypatch.setattr(executor_module, "prompt_tokens", slow_prompt)
    config = RunConfig(model=model_preset("tiny"),
                       allocator=AllocatorConfig.of("paged", **ALLOCATORS["paged"]),
                       scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=48),
                       budget_slots_override=4096)
    _, executor = run_on_device(config, trace, tiny_decoder)
    assert executor.outputs() == plain
    assert executor.step_log.frame().host_prep_s.max() < delay_s
