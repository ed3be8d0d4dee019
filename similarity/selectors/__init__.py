"""Reads: similarity searches and the per-process loaded index."""
