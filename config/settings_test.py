"""Test settings: the same as production settings, with tasks run inline and fast hashing."""

from config.settings import *  # noqa: F403
from config.settings import LOOKALIKE, Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The suite's image servers run on 127.0.0.1: allow private addresses (tests of the refusal
# set it back to False).
LOOKALIKE = {**LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}
