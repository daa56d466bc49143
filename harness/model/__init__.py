"""What the hardware costs: run configuration, model and GPU presets, KV budget, cost model and
capacity planner."""
