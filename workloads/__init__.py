"""kvharness: workloads."""
