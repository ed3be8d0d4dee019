"""Similarity services: writes and side effects (embedding, index builds)."""
