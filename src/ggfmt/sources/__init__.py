"""Readers of inputs that are not binary layouts (directories of JSON and tensor files)."""
