"""Supplier photo matching: sources, the matching pipeline, its report, the admin's runs."""
