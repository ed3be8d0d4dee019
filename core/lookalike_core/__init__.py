"""Lookalike's pure image code, shared by the server and the light client (numpy + Pillow only)."""
