"""`python -m harness.cli` runs the `kvharness` command line."""
import sys

from harness.cli import main

sys.exit(main())
