"""The model families: what each backend accepts, loads and recommends, in one registry.

Each backend module declares a ``ModelFamily`` (its specs, loader, dimension, preprocessing
and default thresholds) and ``embedders/__init__.py`` registers it in one line, as immich
machine-learning's ``models/__init__.py`` does. Spec parsing (``specs.parse_model_spec``),
loading (``load_embedder``) and the settings' threshold defaults read this registry, so a
new family touches its backend module and that one line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from similarity.engine.embedders.base import Embedder

Loader = Callable[[str, str], "Embedder"]  # (reference, device) -> a loaded embedder

MSG_TAKEN = "model family {name!r} is already registered"
MSG_SPEC_TAKEN = "model family {name!r} claims {what!r}, already claimed by {other!r}"
MSG_UNKNOWN = "unknown model family {name!r}; registered: {known}"


@dataclass(frozen=True)
class Thresholds:
    """A family's default cosine distances: duplicates (strict "<"), "similar" ("<=")."""

    duplicate: float
    similar: float


# A family that declares none: conservative, documented in README "Catalog similarity".
FALLBACK_THRESHOLDS = Thresholds(duplicate=0.05, similar=0.25)


@dataclass(frozen=True)
class ModelFamily:
    """A kind of model: which specs name it, how one loads, what its vectors look like.

    Specs: one of ``names`` exactly (``classic``), or ``prefix`` + a reference
    (``transformers:<name-or-path>``), or, for the one ``catch_all`` family, anything no
    other family claims (a sentence-transformers name or path). ``load(reference, device)``
    does the heavy imports itself, so registering costs nothing.
    """

    name: str
    load: Loader
    names: tuple[str, ...] = ()
    prefix: str = ""
    catch_all: bool = False
    dimension: int | None = None  # None: set by the checkpoint, known once loaded
    preprocessing: str = ""  # one line; the loaded embedder's preprocessing() has the details
    thresholds: Thresholds | None = None  # None: FALLBACK_THRESHOLDS
    uses_torch: bool = True  # loading sets torch's thread count first
    catch_all_form: str = "a model name or path"  # how a catch-all spec reads, for messages

    def reference(self, spec: str) -> str | None:
        """What this family loads for the trimmed ``spec`` ("" if it names nothing), or None
        when the spec is not this family's."""
        if self.prefix and spec.startswith(self.prefix):
            return spec.removeprefix(self.prefix).strip()
        if spec in self.names:
            return spec
        return spec if self.catch_all else None

    def canonical(self, reference: str) -> str:
        """The spec as builds and manifests record it."""
        return self.prefix + reference if self.prefix else reference

    def spec_forms(self) -> list[str]:
        """How specs of this family are written, for error messages."""
        forms = [repr(name) for name in self.names]
        if self.prefix:
            forms.append(f"'{self.prefix}<name-or-path>'")
        if self.catch_all:
            forms.append(self.catch_all_form)
        return forms

    @property
    def default_thresholds(self) -> Thresholds:
        return self.thresholds or FALLBACK_THRESHOLDS


_families: dict[str, ModelFamily] = {}
_lock = threading.Lock()


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family``; ValueError if its name, a name or its prefix is already claimed."""
    claims = [what for what in (*family.names, family.prefix) if what]
    with _lock:
        if family.name in _families:
            raise ValueError(MSG_TAKEN.format(name=family.name))
        for other in _families.values():
            for what in claims:
                if what in other.names or what == other.prefix:
                    raise ValueError(
                        MSG_SPEC_TAKEN.format(name=family.name, what=what, other=other.name)
                    )
            if family.catch_all and other.catch_all:
                raise ValueError(
                    MSG_SPEC_TAKEN.format(name=family.name, what="any spec", other=other.name)
                )
        _families[family.name] = family
    return family


def unregister(name: str) -> None:
    """Forget the family ``name`` (tests that register their own); no error if unknown."""
    with _lock:
        _families.pop(name, None)


def model_families() -> tuple[ModelFamily, ...]:
    """The registered families, in registration order."""
    with _lock:
        return tuple(_families.values())


def model_family_get(name: str) -> ModelFamily:
    """The registered family ``name``; KeyError naming the known ones otherwise."""
    with _lock:
        family = _families.get(name)
        if family is None:
            raise KeyError(MSG_UNKNOWN.format(name=name, known=", ".join(sorted(_families))))
        return family


def family_for_spec(spec: str) -> tuple[ModelFamily, str] | None:
    """The family that claims the trimmed ``spec`` and its reference, or None."""
    families = model_families()
    # Exact names and prefixes first, whatever the registration order; the catch-all last.
    for family in sorted(families, key=lambda item: item.catch_all):
        reference = family.reference(spec)
        if reference is not None:
            return family, reference
    return None


def family_thresholds(name: str) -> Thresholds:
    """The default thresholds of the family ``name``; FALLBACK_THRESHOLDS when it declares
    none or is not registered (a build recorded by a family since removed)."""
    with _lock:
        family = _families.get(name)
    return family.default_thresholds if family is not None else FALLBACK_THRESHOLDS
