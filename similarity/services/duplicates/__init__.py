"""Reviewers' duplicate decisions (the groups themselves are reads: selectors.duplicates)."""
