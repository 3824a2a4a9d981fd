"""Helpers for tests and benchmarks that ship with the library (as
tfds.testing does): small learnable datasets written on the fly."""
