"""Suite-wide setup: without a GPU, Triton kernels run in the interpreter.

This must happen before anything imports triton, so it lives at the root of the suite. Without
torch installed the torch-free tests (allocators, workloads, engine, reports) still run; the
kernel and GPU-executor tests skip themselves.
"""
import os

try:
    import torch
except ModuleNotFoundError:
    torch = None

if torch is None or not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
