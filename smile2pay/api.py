"""``Smile2Pay``: the public facade. One FacePipeline (images -> Faces) and one Gallery (embeddings).

    from smile2pay import Smile2Pay
    s2p = Smile2Pay(gallery="path/to/gallery", models=None)   # models: folder or pack name
    s2p.enroll("alice", ["neutral.jpg"], kind="neutral")
    s2p.identify(image, k=5); s2p.verify_identity("alice", image_or_face)
    s2p.get("alice"); s2p.remove("alice"); s2p.compact()

``verify()`` (identity AND smile, issue 5) will build on :meth:`Smile2Pay.face` and
:meth:`Smile2Pay.verify_identity`.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from .config import GallerySettings, Settings
from .errors import FaceError, RequestError, Smile2PayError
from .gallery import EnrollResult, Gallery, IdentityResult, Match, UserRecord
from .types import Face

log = logging.getLogger(__name__)

LOW_QUALITY = "LOW_QUALITY"


class Smile2Pay:
    """Face pipeline + gallery.

    Args:
        gallery: gallery folder (created on first use).
        models: model folder or pack name (default: SMILE2PAY_MODELS, then ~/.smile2pay/models).
        settings / gallery_settings: full settings objects (default: from the environment).
        key: gallery key (default: SMILE2PAY_GALLERY_KEY / SMILE2PAY_GALLERY_KEY_FILE).
        identity_threshold: cosine for "same person" (default 0.42, strict and uncalibrated; see
            :data:`smile2pay.config.DEFAULT_IDENTITY_THRESHOLD`).
        pipeline: an already-loaded FacePipeline to share (its fingerprint must match the gallery's).
    """

    def __init__(self, gallery: str | os.PathLike, models: str | None = None, *,
                 settings: Settings | None = None, gallery_settings: GallerySettings | None = None,
                 key: bytes | None = None, identity_threshold: float | None = None, index: str | None = None,
                 pipeline=None) -> None:
        from .pipeline import FacePipeline

        self.settings = settings or Settings.from_env(models=models)
        self.gallery_settings = gallery_settings or GallerySettings.from_env(
            key=key, identity_threshold=identity_threshold, index=index)
        self.pipeline = pipeline or FacePipeline(self.settings)
        gs = self.gallery_settings
        self.gallery = Gallery(gallery, fingerprint=self.pipeline.model_fingerprint,
                               dim=getattr(self.pipeline.embedder, "dim", None) or 512,
                               key=gs.key, identity_threshold=gs.identity_threshold, index=gs.index)

    @property
    def identity_threshold(self) -> float:
        return self.gallery.identity_threshold

    # -- images -> faces -----------------------------------------------------------------------
    def face(self, image_or_face, *, pick: str = "error") -> Face:
        """One embedded face from a path / bytes / BGR array, or a ``Face`` passed through."""
        if isinstance(image_or_face, Face):
            if image_or_face.embedding is None:
                self.pipeline.embed([image_or_face])
            return image_or_face
        return self.pipeline.single(image_or_face, pick=pick)

    # -- enrolment -----------------------------------------------------------------------------
    def enroll(self, user_id: str, images: Sequence[Any] | Any, kind: str | Sequence[str] = "neutral", *,
               mode: str = "new", pick: str = "error", check_duplicates: bool = True,
               require_quality: bool = True) -> EnrollResult:
        """Enrol ``user_id`` from images (paths, bytes, BGR arrays or Faces).

        Images with no usable face or failing the quality gates are rejected with reasons
        (``EnrollResult.rejected``); the others are enrolled. If none passes, ``FaceError``
        (``LOW_QUALITY``, or ``NO_FACE``/``MULTIPLE_FACES`` for a single image) is raised with the
        per-image reasons. A face matching another user raises ``DuplicateIdentityError``.
        ``mode``: ``new`` | ``append`` | ``replace`` (see :meth:`Gallery.enroll`).
        """
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray, Face)):
            images = [images]
        images = list(images)
        if not images:
            raise RequestError("enroll needs at least one image", code="REQUEST_INVALID")
        kinds = [kind] * len(images) if isinstance(kind, str) else list(kind)
        if len(kinds) != len(images):
            raise RequestError("kind must be one string or one per image", code="REQUEST_INVALID")
        self.gallery._check_user_id(user_id)
        embs, ok_kinds, rejected = [], [], []
        last_err: Smile2PayError | None = None
        for i, (im, kd) in enumerate(zip(images, kinds)):
            label = str(im) if isinstance(im, (str, os.PathLike)) else f"#{i}"
            try:
                f = self.face(im, pick=pick)
            except FaceError as e:
                rejected.append({"image": label, "code": e.code, "reasons": [e.code]})
                last_err = e
                continue
            if require_quality and not f.quality.passed:
                rejected.append({"image": label, "code": LOW_QUALITY, "reasons": list(f.quality.reasons)})
                continue
            embs.append(f.embedding)
            ok_kinds.append(kd)
        if not embs:
            code = last_err.code if (len(images) == 1 and last_err is not None) else LOW_QUALITY
            raise FaceError(f"no usable face in the {len(images)} image(s) given for enrolment", code=code,
                            user_id=user_id, rejected=rejected)
        res = self.gallery.enroll(user_id, np.stack(embs), ok_kinds, mode=mode, check_duplicates=check_duplicates)
        res.rejected = rejected
        return res

    # -- queries -------------------------------------------------------------------------------
    def identify(self, image_or_face, k: int = 5, *, threshold: float | None = None,
                 pick: str = "error") -> list[Match]:
        """1:N open-set identification: top-k users; ``Match.match`` marks scores >= threshold."""
        return self.gallery.identify(self.face(image_or_face, pick=pick).embedding, k, threshold=threshold)

    def verify_identity(self, user_id: str, image_or_face, *, threshold: float | None = None,
                        pick: str = "error") -> IdentityResult:
        """1:1: does this face belong to the claimed ``user_id``?"""
        return self.gallery.verify_identity(user_id, self.face(image_or_face, pick=pick).embedding,
                                            threshold=threshold)

    # -- storage pass-throughs -----------------------------------------------------------------
    def remove(self, user_id: str) -> int:
        return self.gallery.remove(user_id)

    def get(self, user_id: str) -> UserRecord:
        return self.gallery.get(user_id)

    def list(self, offset: int = 0, limit: int | None = None) -> list[str]:
        return self.gallery.list(offset, limit)

    def count(self) -> int:
        return self.gallery.count()

    def compact(self) -> dict:
        return self.gallery.compact()

    def rotate_key(self, new_key: bytes | None) -> int:
        return self.gallery.rotate_key(new_key)

    def close(self) -> None:
        self.gallery.close()

    def __enter__(self) -> "Smile2Pay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
