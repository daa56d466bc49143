"""Real decode on a device: a Llama-style decoder, a KV pool that follows the allocator's segments,
the GpuExecutor that plugs into the engine, and the transformers peer baseline.

Everything here imports torch; keep it out of modules that must stay cheap to import.
"""
