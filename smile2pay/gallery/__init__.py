"""Gallery of enrolled identity templates: SQLite (source of truth) + in-memory FAISS.

See :mod:`smile2pay.gallery.store` for the durability, concurrency, encryption and erasure story.
"""
from .crypto import TemplateCipher, generate_key
from .store import (DuplicateIdentityError, EnrollResult, Gallery, IdentityResult, Match, TemplateInfo,
                    UserRecord)

__all__ = ["Gallery", "DuplicateIdentityError", "EnrollResult", "IdentityResult", "Match", "TemplateInfo",
           "UserRecord", "TemplateCipher", "generate_key"]
