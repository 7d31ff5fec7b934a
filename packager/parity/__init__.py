"""Parity of the seed recipes with the records' own scripts (see compare.py)."""
