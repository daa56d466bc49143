"""Grids of run configurations, run in local processes or on Dask, resumable."""
