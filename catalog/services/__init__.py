"""Catalog services: writes and side effects (import, download)."""
