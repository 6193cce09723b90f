"""Registry entries of the PD7xx deep checks (importing this stays light)."""
