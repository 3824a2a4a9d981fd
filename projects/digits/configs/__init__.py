"""Experiment configs of the digits demo (see projects/digits)."""
