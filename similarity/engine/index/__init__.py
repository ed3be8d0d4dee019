"""Pure Faiss index layer (no Django): build, update, query and store cosine-similarity indexes."""

from similarity.engine.index.build import (
    FLAT_MAX_VECTORS,
    add_vectors,
    build_index,
    index_ids,
    pin_faiss_threads,
    remove_ids,
    resolve_factory,
    set_faiss_threads,
    supports_incremental,
)
from similarity.engine.index.collapse import COLLAPSE_FETCH_FACTOR, Folded, collapse_ranked
from similarity.engine.index.groups import StarGroup, connected_components, star_groups
from similarity.engine.index.manifest import BuildManifest, read_manifest
from similarity.engine.index.members import MEMBERS_FILE, members_table, read_members
from similarity.engine.index.search import (
    Neighbors,
    brute_force_knn,
    knn_query,
    range_query,
    range_search_batched,
    recall_at_k,
)
from similarity.engine.index.storage import (
    BuildInfo,
    current_build,
    find_build_by_checksum,
    input_checksum,
    list_builds,
    load_index,
    prune_builds,
    set_current,
    write_build,
)
from similarity.engine.timing import Timeit

__all__ = [
    "COLLAPSE_FETCH_FACTOR",
    "FLAT_MAX_VECTORS",
    "MEMBERS_FILE",
    "BuildInfo",
    "BuildManifest",
    "Folded",
    "Neighbors",
    "StarGroup",
    "Timeit",
    "add_vectors",
    "brute_force_knn",
    "build_index",
    "collapse_ranked",
    "connected_components",
    "current_build",
    "find_build_by_checksum",
    "index_ids",
    "input_checksum",
    "knn_query",
    "list_builds",
    "load_index",
    "members_table",
    "pin_faiss_threads",
    "prune_builds",
    "range_query",
    "range_search_batched",
    "read_manifest",
    "read_members",
    "recall_at_k",
    "remove_ids",
    "resolve_factory",
    "set_current",
    "set_faiss_threads",
    "star_groups",
    "supports_incremental",
    "write_build",
]
