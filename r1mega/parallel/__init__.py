"""Parallel layout and process groups (layout, init, compat); importing the package imports none of them."""
