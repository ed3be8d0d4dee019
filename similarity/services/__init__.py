"""Writes and side effects, one sub-package per capability: builds, indexing, duplicates,
matching, evaluation (docs/architecture.md says what each holds and how they may depend)."""
