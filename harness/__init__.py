"""kvharness: harness."""
