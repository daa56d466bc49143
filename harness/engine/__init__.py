"""The engine core: SimPy loop, scheduler, sequences, the batch it hands executors, swap space,
recorder and summary."""
