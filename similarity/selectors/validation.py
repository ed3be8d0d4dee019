"""The one validator of k (results per query), for every interface and capability."""

from __future__ import annotations

from similarity.conf import similarity_settings
from similarity.errors import InvalidQuery

MSG_BAD_K = "k must be an integer between 1 and {max_k}; got {k!r}"


def validate_k(k: object) -> int:
    """k parsed (an int, or its text) and bounded to 1..MAX_K; None is DEFAULT_K.

    InvalidQuery with the offending value otherwise (the API answers 400; commands name
    their ``--k`` option in front of the message).
    """
    conf = similarity_settings()
    if k is None:
        return conf.default_k
    if isinstance(k, bool):
        raise InvalidQuery(MSG_BAD_K.format(max_k=conf.max_k, k=k))
    try:
        value = k if isinstance(k, int) else int(str(k).strip())
    except ValueError:
        raise InvalidQuery(MSG_BAD_K.format(max_k=conf.max_k, k=k)) from None
    if not 1 <= value <= conf.max_k:
        raise InvalidQuery(MSG_BAD_K.format(max_k=conf.max_k, k=k))
    return value
