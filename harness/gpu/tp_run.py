"""A tensor-parallel measured run, or profile: one process per rank, the engine on rank 0 only.

Rank 0 runs the engine (scheduler, allocator, recorder) exactly as a one-GPU run does, with a
LeaderExecutor that sends each Batch to the other ranks before running its own share of it.
The other ranks build the same GpuExecutor on their shard and replay the batches they receive,
so every rank applies the same memory operations to its own KV heads and samples the same
tokens. Batches travel as pickled objects over a gloo group on the host: they are host data,
and keeping them off NCCL keeps the device stream free of anything but the forward. A profile
(`kvharness profile --tp N`) is led the same way: rank 0 measures the grid, and the others
build each block size's executor from the setup it sends and step its batches.

NVLink multicast stays off in the launcher and in every rank (NCCL's NVLS, PyTorch's symmetric
memory, NVSHMEM): the machines this runs on share GPUs, and a fault there can take them down.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from harness.engine.batch import Batch
from harness.engine.executor import KVGeometry
from harness.engine.loop import RunResult, simulate
from harness.model.config import ConfigError, RunConfig

MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def multicast_off() -> None:
    """Set in this process (and so in every process it starts): never left to a default."""
    os.environ.update(MULTICAST_OFF)


@dataclass(frozen=True)
class TpJob:
    """What every rank needs to take part in one run (pickled to each spawned process)."""

    config: RunConfig  # config.tp ranks
    trace: pd.DataFrame
    device_type: str  # "cuda": rank r on cuda:r with NCCL; "cpu": gloo
    dtype: str
    port: int
    result_path: str  # where rank 0 leaves its TpResult (a profile: its rows)
    cuda_graphs: bool = True
    decode_balance: str = "auto"  # build_decoder's
    profile: object = None  # harness.gpu.profile.ProfileSettings: profile instead of a run


@dataclass(frozen=True)
class TpResult:
    """Rank 0's run: the engine's result, the generated tokens, the executor's details and
    its per-step log (harness.gpu.step_log), and the device's name."""

    result: RunResult
    outputs: dict[int, list[int]]
    details: dict
    step_log: pd.DataFrame
    device: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tensor_parallel(config: RunConfig, trace: pd.DataFrame, *, device_type: str,
                        dtype: str, cuda_graphs: bool = True,
                        decode_balance: str = "auto") -> TpResult:
    """Replay the trace over config.tp ranks (processes); rank 0's measured run comes back."""
    return _spawn(config, trace, device_type, dtype, cuda_graphs, decode_balance, None)


def profile_tensor_parallel(config: RunConfig, settings, *, device_type: str, dtype: str,
                            decode_balance: str = "auto") -> pd.DataFrame:
    """`kvharness profile`'s rows (harness.gpu.profile.measure_profile) measured over config.tp
    ranks: every point a step of the whole tensor-parallel decoder, all-reduces included."""
    return _spawn(config, None, device_type, dtype, True, decode_balance, settings)


def _spawn(config: RunConfig, trace, device_type: str, dtype: str, cuda_graphs: bool,
           decode_balance: str, profile):
    import torch.multiprocessing as mp

    from harness.gpu.tp import check_divisible

    multicast_off()
    check_divisible(_decoder_config(config), config.tp)  # here, not in every rank
    if device_type == "cuda" and torch.cuda.device_count() < config.tp:
        raise ConfigError(f"tp {config.tp} needs {config.tp} GPUs; "
                          f"{torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="kvharness_tp_") as tmp:
        job = TpJob(config, trace, device_type, dtype, free_port(), str(Path(tmp) / "rank0.pkl"),
                    cuda_graphs, decode_balance, profile)
        mp.spawn(rank_main, args=(job,), nprocs=config.tp, join=True)
        with open(job.result_path, "rb") as fh:
            return pickle.load(fh)


def rank_main(rank: int, job: TpJob) -> None:
    """One rank's whole life: join the group, build its shard, lead or follow the run."""
    from harness.gpu.executor import build_decoder
    from harness.gpu.tp import TensorParallel

    multicast_off()
    size = job.config.tp
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job.port))
    if job.device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        # The ranks share the host's cores: oversubscribed threads would time the scheduler.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                            world_size=size)
    try:
        control = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
        tp = TensorParallel(_decoder_config(job.config), rank=rank, size=size,
                            group=dist.group.WORLD, control_group=control)
        if device.type == "cuda":  # create the communicator now, outside any graph capture
            tp.all_reduce(torch.zeros(1, device=device))
            torch.cuda.synchronize(device)
        decoder = build_decoder(job.config.model, device=device, dtype=job.dtype,
                                seed=job.config.seed, tp=tp,
                                decode_balance=job.decode_balance)
        if job.profile is not None:
            (_lead_profile if rank == 0 else _follow_profile)(job, decoder, control)
        elif rank == 0:
            _lead(job, decoder, control)
        else:
            _follow(job, decoder, control)
    finally:
        dist.destroy_process_group()


def _decoder_config(config: RunConfig):
    from harness.gpu.model import DecoderConfig

    return DecoderConfig.from_model_spec(config.model)


def _broadcast(message, control):
    box = [message]
    dist.broadcast_object_list(box, src=0, group=control)
    return box[0]


class LeaderExecutor:
    """Rank 0's executor for the engine: each batch goes to the other ranks first, then runs
    here; everything the engine and the recorder read is rank 0's GpuExecutor's."""

    name = "gpu"
    needs_layouts = True

    def __init__(self, executor, control) -> None:
        self.executor = executor
        self.device = executor.device
        self._control = control

    @property
    def kv_allocated_bytes(self) -> int:
        """Rank 0's KV memory: each rank holds the same slots of its own share of the heads."""
        return self.executor.kv_allocated_bytes

    @property
    def details(self) -> dict:
        return self.executor.details

    def step(self, batch: Batch) -> float:
        _broadcast(batch, self._control)
        return self.executor.step(batch)


def _lead(job: TpJob, decoder, control) -> None:
    from harness.gpu.executor import GpuExecutor

    made: list[GpuExecutor] = []

    def factory(cfg: RunConfig, geometry: KVGeometry) -> LeaderExecutor:
        _broadcast(geometry, control)
        made.append(GpuExecutor(cfg, geometry, decoder=decoder, trace=job.trace,
                                cuda_graphs=job.cuda_graphs))
        return LeaderExecutor(made[0], control)

    try:
        result = simulate(job.config, job.trace, executor_factory=factory)
    finally:
        _broadcast(None, control)  # the followers stop, whatever happened here
    executor = made[0]
    with open(job.result_path, "wb") as fh:
        pickle.dump(TpResult(result, executor.outputs(), executor.details,
                             executor.step_log.frame(), executor.device), fh)


def _follow(job: TpJob, decoder, control) -> None:
    from harness.gpu.executor import GpuExecutor

    geometry = _broadcast(None, control)
    if geometry is None:  # the leader failed before its first step
        return
    executor = GpuExecutor(job.config, geometry, decoder=decoder, trace=job.trace,
                           cuda_graphs=job.cuda_graphs)
    while (batch := _broadcast(None, control)) is not None:
        executor.step(batch)


def _lead_profile(job: TpJob, decoder, control) -> None:
    from harness.gpu.profile import measure_profile

    def lead(setup, executor) -> LeaderExecutor:
        _broadcast(setup, control)
        return LeaderExecutor(executor, control)

    try:
        frame = measure_profile(job.config, decoder, job.profile, lead=lead,
                                log=lambda line: print(line, flush=True))
    finally:
        _broadcast(None, control)  # the followers stop, whatever happened here
    with open(job.result_path, "wb") as fh:
        pickle.dump(frame, fh)


def _follow_profile(job: TpJob, decoder, control) -> None:
    from harness.gpu.profile import follow_profile

    follow_profile(job.config, decoder, lambda: _broadcast(None, control))
