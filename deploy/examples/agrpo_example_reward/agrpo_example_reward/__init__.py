"""Example agrpo reward plugin package (see README.md)."""
