"""kvharness: kernels."""
