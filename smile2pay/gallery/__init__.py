"""Storage: the gallery of enrolled identity templates and the guard (lockout, nonces, audit) beside it.

The contract is :mod:`smile2pay.gallery.base`: :class:`GalleryStore` (the gallery API) and
:class:`GuardStore` (the guard API), each with a base class holding the shared logic
(:class:`BaseGallery`, :class:`BaseGuard`). Backends, picked by URL through :data:`BACKENDS`:

``sqlite``      a folder or ``sqlite:///path`` (embedded, default): :mod:`~smile2pay.gallery.store` +
                :mod:`~smile2pay.gallery.guard` (durability, concurrency, encryption, erasure: see store)
``postgresql``  ``postgresql://user@host:port/db[?schema=name]`` (shared by a fleet):
                :mod:`~smile2pay.gallery.postgres` + :mod:`~smile2pay.gallery.guard_pg`

A third backend is one file plus one registry line:

1. ``smile2pay/gallery/mybackend.py`` with ``class MyGallery(BaseGallery)`` implementing the backend
   operations listed in :mod:`smile2pay.gallery.base` (``_write_txn`` yielding a :class:`WriteTxn`,
   ``_read_user``, ``_read_templates``, ``_read_baseline``, ``_owners_of``, ``_fresh_index``,
   ``_integrity``, ``list``, ``count``, ``template_count``, ``__contains__``, ``compact``, ``close``;
   a class method ``open(location, **kwargs)`` when the URL needs parsing), and
   ``class MyGuard(BaseGuard)`` (``for_gallery``, ``_recent_failures``, ``_append_audit``, ``reserve``,
   ``release``, ``record``, ``reset``, ``use_nonce``, ``audit_records``, ``forget_user``, ``close``);
   set ``MyGallery.backend = "mybackend"``.
2. One line in :data:`BACKENDS`: ``"mybackend": Backend(("mybackend",), ".mybackend:MyGallery",
   ".mybackend:MyGuard"),``.

``tests/unit/test_storage_contract.py`` then runs the same behavioural checks on it once its fixture lists it.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from .base import (BaseGallery, BaseGuard, DuplicateIdentityError, EnrollResult, GalleryStore, GuardStore,
                   IdentityResult, Match, TemplateInfo, UserRecord, WriteTxn)
from .crypto import TemplateCipher, generate_key
from .store import Gallery


@dataclass(frozen=True)
class Backend:
    """A registered storage backend: URL schemes it answers (``""``: a plain path, the default) and its
    gallery and guard classes as ``"module:Class"`` (imported on first use: drivers are optional)."""

    schemes: tuple[str, ...]
    gallery: str
    guard: str

    def gallery_class(self) -> type[GalleryStore]:
        return _load(self.gallery)

    def guard_class(self) -> type[GuardStore]:
        return _load(self.guard)


#: kind -> backend (``GalleryStore.backend`` is the kind). A new backend is one line here.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(("", "sqlite"), ".store:Gallery", ".guard:Guard"),
    "postgresql": Backend(("postgresql", "postgres"), ".postgres:PostgresGallery", ".guard_pg:PostgresGuard"),
}


def _load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module, __name__), name)


def backend_kind(location) -> str:
    """The kind of backend that serves ``location`` (a URL's scheme; a path is the default backend)."""
    scheme = ""
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0].lower()
    for kind, b in BACKENDS.items():
        if scheme in b.schemes:
            return kind
    return next(kind for kind, b in BACKENDS.items() if "" in b.schemes)


def open_gallery(location, **kwargs) -> GalleryStore:
    """The gallery at ``location``: a folder or ``sqlite:///path`` (embedded, default) or
    ``postgresql://user@host:port/db[?schema=name]`` (shared by a fleet). ``kwargs`` as for
    :class:`Gallery` (plus ``pg``/``follow`` for PostgreSQL; ignored by backends without them)."""
    if not isinstance(location, str):
        location = os.fspath(location)
    return BACKENDS[backend_kind(location)].gallery_class().open(location, **kwargs)


def open_guard(gallery: GalleryStore, settings=None) -> GuardStore:
    """The guard beside ``gallery``, from the same backend (SQLite + JSONL in the gallery folder, or
    PostgreSQL tables). ``settings``: :class:`smile2pay.decision.lockout.GuardSettings`."""
    from ..decision.lockout import GuardSettings

    kind = getattr(gallery, "backend", "sqlite")
    return BACKENDS[kind].guard_class().for_gallery(gallery, settings or GuardSettings())


__all__ = ["open_gallery", "open_guard", "backend_kind", "BACKENDS", "Backend", "GalleryStore", "GuardStore",
           "BaseGallery", "BaseGuard", "WriteTxn", "Gallery", "DuplicateIdentityError", "EnrollResult",
           "IdentityResult", "Match", "TemplateInfo", "UserRecord", "TemplateCipher", "generate_key"]
