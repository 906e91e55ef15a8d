"""Gallery of enrolled identity templates: SQLite (source of truth) + in-memory FAISS.

See :mod:`smile2pay.gallery.store` for the durability, concurrency, encryption and erasure story, and
:mod:`smile2pay.gallery.postgres` for the shared PostgreSQL gallery of a fleet (``open_gallery`` picks
one by URL).
"""
from .crypto import TemplateCipher, generate_key
from .store import (DuplicateIdentityError, EnrollResult, Gallery, IdentityResult, Match, TemplateInfo,
                    UserRecord)



def open_gallery(location, **kwargs):
    """The gallery at ``location``: a folder or ``sqlite:///path`` (embedded, default) or
    ``postgresql://user@host:port/db[?schema=name]`` (shared by a fleet). ``kwargs`` as for
    :class:`Gallery` (plus ``pg``/``follow`` for PostgreSQL)."""
    import os

    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresGallery

        return PostgresGallery(location, **kwargs)
    kwargs.pop("pg", None)
    kwargs.pop("follow", None)
    if isinstance(location, str) and location.startswith("sqlite://"):
        location = location[len("sqlite://"):]
        if not location:
            from ..errors import GalleryError

            raise GalleryError("sqlite:// URL needs a path (sqlite:///abs/path or sqlite://rel/path)",
                               code="GALLERY_BAD_URL")
    return Gallery(os.fspath(location), **kwargs)


def open_guard(gallery, settings=None):
    """The guard beside ``gallery``: SQLite + JSONL in the gallery folder, or PostgreSQL tables."""
    from ..decision.guard import Guard, GuardSettings

    settings = settings or GuardSettings()
    if getattr(gallery, "backend", "sqlite") == "postgresql":
        from ..decision.guard_pg import PostgresGuard

        return PostgresGuard(gallery.pool, settings)
    return Guard(gallery.path, settings)


__all__ = ["open_gallery", "open_guard", "Gallery", "DuplicateIdentityError", "EnrollResult", "IdentityResult",
           "Match", "TemplateInfo",
           "UserRecord", "TemplateCipher", "generate_key"]
