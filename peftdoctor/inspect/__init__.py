"""Checkpoint inspection from adapter_config.json and weight headers (no torch)."""
