"""diagnose (wip)."""
