"""Public result types: one ``Face`` flows through every stage.

``Face.to_dict()`` is JSON-serialisable and, by default, leaves out embeddings
(biometric templates must not end up in logs or audit records); pass
``include_embeddings=True`` where a caller really needs them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Quality reason codes (stable): assigned in smile2pay.reasons, re-exported here.
from .reasons import (  # noqa: F401
    BLURRY,
    EXTREME_POSE,
    FACE_TOO_SMALL,
    LOW_DET_SCORE,
    MULTIPLE_FACES,
    NO_FACE,
    OVEREXPOSED,
    UNDEREXPOSED,
)


@dataclass
class Quality:
    """Outcome of the quality gates; ``reasons`` is empty when every gate passed."""

    reasons: list[str] = field(default_factory=list)
    interocular_px: float = 0.0
    yaw: float = 0.0          # signed, in inter-ocular units (0 = frontal)
    pitch: float = 0.0        # deviation of nose height from a frontal face, in inter-ocular units
    roll_deg: float = 0.0
    sharpness: float = 0.0    # variance of Laplacian on the aligned grey crop
    brightness: float = 0.0   # mean grey level of the aligned crop
    clipped: float = 0.0      # share of clipped pixels

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        d["passed"] = self.passed
        return d


@dataclass
class Face:
    """A detected face. Box and landmarks are in source-image pixels (x, y)."""

    bbox: np.ndarray                 # (4,) x1, y1, x2, y2
    det_score: float
    landmarks: np.ndarray            # (5, 2): left eye, right eye, nose, left mouth, right mouth
    quality: Quality = field(default_factory=Quality)
    embedding: np.ndarray | None = None          # identity, L2-normalised
    au_embedding: np.ndarray | None = None       # AU, L2-normalised (AU model)
    au_probs: dict[str, float] | None = None     # per-AU presence probability (AU6 / AU12 fused, see vision.au)
    happy: float | None = None                   # the expression classifier's P(happy), when the pack has one
    #: the identity network's smile logit (smile2pay.vision.smile_probe), set when the face is embedded and the
    #: pack has a probe; the decision fuses it into AU6 / AU12 (decision.engine.fuse_probe)
    smile_probe: float | None = None
    image_size: tuple[int, int] = (0, 0)         # (width, height) of the source image
    detector_pass: str = ""                      # which detection attempt found it, e.g. "320" / "pad:640"
    #: the source frame (BGR) while the face is being processed; ``drop_image`` releases it
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: the 112x112 identity crop, kept by the pipeline for ``embed``
    identity_crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def crop(self, kind: str = "identity", size: int = 112, pad: float | None = None) -> np.ndarray:
        """Aligned crop on demand: ``identity`` (ArcFace 112) or ``au`` (template padded by 0.15)."""
        from .vision.align import AU_PAD, norm_crop

        if self.image is None:
            raise ValueError("this Face no longer holds its source image (it was dropped or deserialised)")
        if kind not in ("identity", "au"):
            raise ValueError(f"crop kind must be 'identity' or 'au', got {kind!r}")
        if pad is None:
            pad = 0.0 if kind == "identity" else AU_PAD
        return norm_crop(self.image, self.landmarks, size=size, pad=pad)

    def drop_image(self) -> None:
        """Release the reference to the source frame (e.g. before keeping the Face around)."""
        self.image = None

    def to_dict(self, include_embeddings: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "det_score": round(float(self.det_score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "quality": self.quality.to_dict(),
            "detector_pass": self.detector_pass,
        }
        if self.au_probs is not None:
            d["au_probs"] = {k: round(float(v), 4) for k, v in self.au_probs.items()}
        if self.happy is not None:
            d["happy"] = round(float(self.happy), 4)
        if self.smile_probe is not None:
            d["smile_probe"] = round(float(self.smile_probe), 4)
        if include_embeddings:
            if self.embedding is not None:
                d["embedding"] = [float(v) for v in self.embedding]
            if self.au_embedding is not None:
                d["au_embedding"] = [float(v) for v in self.au_embedding]
        else:
            d["has_embedding"] = self.embedding is not None
        return d


@dataclass
class Decision:
    """The payment decision: one JSON-serialisable record (no images, no embeddings).

    ``reasons`` holds stable codes: IDENTITY_MISMATCH, AU_PATTERN_ABSENT, NO_FACE, MULTIPLE_FACES,
    LOW_QUALITY, LIVENESS_FAILED, REPLAY, LOCKED_OUT, NOT_ENROLLED (and details such as NO_ONSET,
    NO_CHANGE_FROM_BASELINE). Empty when approved.
    """

    approved: bool
    reasons: list[str]
    user_id: str
    rule: str = ""
    identity: dict[str, Any] = field(default_factory=dict)   # score (min over frames), threshold, far, source
    au: dict[str, Any] = field(default_factory=dict)         # thresholds, best-frame probs, baseline deltas
    liveness: dict[str, Any] = field(default_factory=dict)   # mode, checked, result
    frames: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_pack: str = ""
    policy_version: str = ""
    request_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
