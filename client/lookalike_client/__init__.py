"""Lookalike's light client: match a supplier's photos against a shop's catalog, embedding
them on this machine (only vectors are sent).

    from lookalike_client import match_photos
    summary = match_photos("photos/", server="https://shop.example", token="...",
                           output="report.csv")
"""

from lookalike_client.match import MatchSummary, match_photos
from lookalike_client.model import LocalModel, default_cache_dir, local_model
from lookalike_client.server import ClientError, ModelChanged, Server

__all__ = [
    "ClientError",
    "LocalModel",
    "MatchSummary",
    "ModelChanged",
    "Server",
    "default_cache_dir",
    "local_model",
    "match_photos",
]
