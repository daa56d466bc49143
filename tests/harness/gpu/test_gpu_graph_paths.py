"""The executor's CUDA-graph paths: decode-only graphs (the drafts of a verification among them)
and mixed-step graphs (a verification's every row sampled), staged and replayed. On a GPU the
graphs are real; on a CPU a stand-in graph runs the captured forward again on replay. The
tokens must be the eager executor's, and with speculation plain decoding's."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import harness.gpu.graphs as graphs_module  # noqa: E402
import harness.gpu.mixed_graphs as mixed_module  # noqa: E402
from harness.engine.loop import simulate  # noqa: E402
from harness.gpu.executor import GpuExecutor  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from workloads.transforms import set_decoding  # noqa: E402

MAX_SEQS = 8


class ReplayedForward:
    """A captured graph's stand-in: replay runs the forward again into the captured output."""

    def __init__(self, forward):
        self.forward = forward
        self.out = forward()

    def replay(self):
        self.out.copy_(self.forward())


def _capture(forward, mempool):
    graph = ReplayedForward(forward)
    return graph, graph.out


@pytest.fixture
def graph_device(monkeypatch) -> str:
    """"cuda" where there is a GPU (real graphs, float32 dots without TF32); else "cpu", with
    the stand-in graphs patched in."""
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        return "cuda"
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(graphs_module, "capture", _capture)
    monkeypatch.setattr(mixed_module, "capture", _capture)
    return "cpu"


def _run(decoder, trace, graphs: bool):
    config = RunConfig(model=model_preset("tiny"),
                       allocator=AllocatorConfig.of("paged", block_size=4),
                       scheduler=SchedulerConfig(max_num_seqs=MAX_SEQS,
                                                 max_num_batched_tokens=48),
                       budget_slots_override=4096)
    made = []

    def factory(cfg, geometry):
        executor = GpuExecutor(cfg, geometry, decoder=decoder, trace=trace)
        if graphs:  # what the executor builds on a GPU
            longest = int((trace.prompt_tokens + trace.output_tokens).max())
            rows = 1 + int(trace.spec_tokens.max())
            executor._graphs = graphs_module.DecodeGraphs(
                decoder, executor.pool, executor._device_tables, max_batch=MAX_SEQS,
                max_context=longest)
            executor._mixed = mixed_module.MixedGraphs(
                decoder, executor.pool, executor._device_tables, max_seqs=MAX_SEQS,
                max_context=longest, max_tokens=64, max_sampled=MAX_SEQS * rows)
            executor._drafter.graphs = executor._graphs
        made.append(executor)
        return executor

    result = simulate(config, trace, executor_factory=factory)
    assert result.summary["completed"] == len(trace)
    outputs = made[0].outputs()
    tokens = {rid: outputs[rid][:n] for rid, n in enumerate(trace.output_tokens)}
    return tokens, made[0]


def _triton_and_wave(device: str, small_trace):
    """The tiny model over the Triton backend, and 8 requests arriving at once."""
    from harness.gpu.attention import TritonAttention
    from harness.gpu.executor import build_decoder
    from harness.gpu.model import Decoder

    base = build_decoder(model_preset("tiny"), device=device, dtype="float32", seed=0)
    trace = small_trace(8, 6, max_prompt=30, max_output=14)
    trace["arrival_s"] = 0.0
    return Decoder(base.config, base.weights, TritonAttention()), trace


def test_graph_replays_give_the_eager_and_the_plain_tokens(graph_device, small_trace):
    decoder, trace = _triton_and_wave(graph_device, small_trace)
    plain, _ = _run(decoder, trace, graphs=False)
    graphed, executor = _run(decoder, trace, graphs=True)
    assert graphed == plain
    assert executor.details["cuda_graph_steps"] > 0

    spec, executor = _run(decoder, set_decoding(trace, spec_tokens=3, spec_accept=0.7),
                          graphs=True)
    assert spec == plain
    log = executor.step_log.frame()
    verifying = log.verify_seqs > 0
    assert verifying.any() and log.graph[verifying].all()  # verifications in mixed graphs
    assert executor._graphs.captures > 0  # the drafts decoded in decode graphs
    assert executor.details["draft_mismatches"] == 0
    assert (log.verify_tokens[verifying] > log.verify_seqs[verifying]).all()  # drafts + 1 rows
    seqs = log.decode_seqs + log.verify_seqs  # the longest context is one of theirs
    assert (log.decode_max_context <= log.decode_context_tokens).all()
    assert (log.decode_max_context * seqs >= log.decode_context_tokens).all()
    assert ((log.decode_max_context > 0) == (seqs > 0)).all()


def test_balanced_decode_gives_the_plain_tokens(graph_device, small_trace):
    """With the backend's balanced decode on, decode rows run over work lists: eager, in
    decode graphs and in mixed graphs, the tokens are the unbalanced executor's. Contexts past
    one 128-key tile and 8 programs per KV head: rows of two tiles are cut in two, and some
    programs get nothing. With auto, only the steps whose longest context is over three times
    the mean do (one 200-token prompt beside four short ones, until it is done), each in a graph
    of its own, and the tokens are the same."""
    from harness.gpu.attention import TritonAttention
    from harness.gpu.executor import build_decoder
    from harness.gpu.model import Decoder

    base = build_decoder(model_preset("tiny"), device=graph_device, dtype="float32", seed=0)
    trace = small_trace(3, 4)
    trace["arrival_s"] = 0.0
    trace["prompt_tokens"] = [150, 20, 140, 5]
    trace["output_tokens"] = [6, 9, 4, 8]

    def decoder(mode: str) -> Decoder:
        return Decoder(base.config, base.weights,
                       TritonAttention(decode_balance=mode, decode_programs=8))

    plain, executor = _run(decoder("off"), trace, graphs=False)
    assert executor.details["decode_balance_skew"] is None
    assert executor.details["balanced_decode_steps"] == 0
    eager, executor = _run(decoder("on"), trace, graphs=False)
    decoding = executor.step_log.frame().decode_seqs > 0
    assert eager == plain and executor.details["balanced_decode_steps"] == decoding.sum()
    graphed, executor = _run(decoder("on"), trace, graphs=True)
    assert graphed == plain
    log = executor.step_log.frame()
    decoding = log.decode_seqs > 0
    assert log.graph[decoding].all() and (log.decode_max_context > 128).any()
    assert (log.prefill_tokens[decoding] > 0).any()  # decode rows in mixed graphs too

    trace = small_trace(5, 5)
    trace["arrival_s"] = 0.0
    trace["prompt_tokens"] = [200, 6, 5, 7, 4]
    trace["output_tokens"] = [4, 12, 12, 12, 12]
    plain, _ = _run(decoder("off"), trace, graphs=False)
    for graphs in (False, True):
        tokens, executor = _run(decoder("auto"), trace, graphs=graphs)
        assert tokens == plain
        log = executor.step_log.frame()
        skewed = log.decode_max_context * log.decode_seqs > 3 * log.decode_context_tokens
        assert skewed.any() and not skewed[log.decode_seqs > 0].all()
        assert executor.details["balanced_decode_steps"] == skewed.sum()
        assert executor.details["decode_balance_skew"] == 3.0
    balanced_graphs = [key for key in executor._graphs._set.graphs if key[1]]
    assert balanced_graphs and len(balanced_graphs) < len(executor._graphs._set.graphs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA graphs")
def test_graphs_captured_anew_while_old_outputs_live(graph_device, small_trace):
    """Graphs dropped for old addresses (a rebuilt segment table, a grown device array) are
    captured again, though tensors allocated in the old graphs' pool are still referenced, as
    a step's output may be."""
    _, executor = _run(*_triton_and_wave(graph_device, small_trace), graphs=True)
    for graphs, key in ((executor._graphs, ()), (executor._mixed, (executor._mixed._staged[0],))):
        held = [out for _, out in graphs._set.graphs.values()]
        captures = graphs.captures
        assert captures > 0
        graphs._set._handles = None  # as after a rebuild: every graph dropped
        graphs.prepare(*key)
        assert graphs.captures == captures + 1 and held
