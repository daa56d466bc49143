"""`python -m harness.cli ...`: the same entry point as the `kvharness` console script."""
import sys

from harness.cli import main

sys.exit(main())
