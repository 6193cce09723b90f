"""Registry entries of the PD6xx checkpoint checks."""
