"""kvharness: reports."""
