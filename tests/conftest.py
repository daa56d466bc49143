"""Suite-wide setup: without a GPU, Triton kernels run in the interpreter.

This must happen before anything imports triton, so it lives at the root of the suite.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
