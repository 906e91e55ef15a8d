"""Expression-change liveness over a burst of frames (pure functions of per-frame measurements).

A burst passes when
* there are at least ``min_frames`` frames,
* the frames are not one still image repeated (REPLAY): consecutive aligned crops must differ
  by more than sensor noise *or* the landmarks must move,
* the AU pattern is absent in an earlier frame and present in a later one (neutral -> smile).

This is **not** a presentation-attack detector: a replayed video of the user, or a good mask,
passes it. A passive PAD model can be plugged in through :class:`PadCheck`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..reasons import LIVENESS_FAILED, NO_ONSET, REPLAY, TOO_FEW_FRAMES  # noqa: F401  (re-exported)


class PadCheck(Protocol):
    """Plug-in point for a passive presentation-attack detector: returns P(live) for a frame."""

    def __call__(self, frame: np.ndarray, face) -> float: ...


@dataclass(frozen=True)
class LivenessSettings:
    min_frames: int = 2
    #: mean absolute grey-level difference of the 112 px aligned crops below which two frames
    #: count as the same still (a camera's sensor noise alone gives more than this)
    still_pixel_diff: float = 1.5
    #: landmark motion (max over 5 points, in inter-ocular units) below which frames count as static
    still_landmark_motion: float = 0.01
    pad_threshold: float = 0.5


@dataclass
class LivenessResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    onset_frame: int | None = None      # first frame where the pattern is present after an absent one
    neutral_frame: int | None = None
    frame_diffs: list[float] = field(default_factory=list)
    pad_scores: list[float] | None = None

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "onset_frame": self.onset_frame,
                "neutral_frame": self.neutral_frame,
                "frame_diffs": [round(float(d), 3) for d in self.frame_diffs],
                "pad_scores": self.pad_scores}


_CHANNEL_MEAN = np.full((1, 3), 1.0 / 3.0, np.float32)


def crop_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey difference of two aligned crops (same size); grey = the mean of the colour channels.

    Computed in OpenCV (the channel mean of the signed difference, then its mean absolute value): the same
    number as ``|a.mean(2) - b.mean(2)|.mean()`` up to float rounding, without NumPy's slow channel reductions."""
    import cv2

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"crops differ in shape: {a.shape} vs {b.shape}")
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.size:
        d = cv2.transform(cv2.subtract(a, b, dtype=cv2.CV_16S).astype(np.float32), _CHANNEL_MEAN)
        return float(cv2.norm(d, cv2.NORM_L1)) / d.size
    ga = a.mean(axis=2) if a.ndim == 3 else a
    gb = b.mean(axis=2) if b.ndim == 3 else b
    return float(np.abs(ga.astype(np.float32) - gb.astype(np.float32)).mean())


def landmark_motion(a: np.ndarray, b: np.ndarray) -> float:
    iod = max(float(np.linalg.norm(a[1] - a[0])), 1e-6)
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / iod)


def check_burst(crops: list[np.ndarray], landmarks: list[np.ndarray], pattern_present: list[bool],
                pattern_absent: list[bool], settings: LivenessSettings = LivenessSettings(),
                pad: Callable[[int], float] | None = None) -> LivenessResult:
    """``pattern_present[i]``: the rule holds in frame i; ``pattern_absent[i]``: it clearly does not
    (a frame in between, e.g. a half smile, is neither)."""
    n = len(crops)
    res = LivenessResult(passed=False)
    if n < settings.min_frames:
        res.reasons = [LIVENESS_FAILED, TOO_FEW_FRAMES]
        return res
    diffs, static = [], []
    for i in range(1, n):
        d = crop_difference(crops[i - 1], crops[i])
        diffs.append(d)
        static.append(d < settings.still_pixel_diff and
                      landmark_motion(landmarks[i - 1], landmarks[i]) < settings.still_landmark_motion)
    res.frame_diffs = diffs
    if all(static):
        res.reasons = [REPLAY]
        return res
    neutral = next((i for i in range(n) if pattern_absent[i]), None)
    onset = None
    if neutral is not None:
        onset = next((j for j in range(neutral + 1, n) if pattern_present[j]), None)
    res.neutral_frame, res.onset_frame = neutral, onset
    if onset is None:
        res.reasons = [LIVENESS_FAILED, NO_ONSET]
        return res
    if pad is not None:
        res.pad_scores = [float(pad(i)) for i in range(n)]
        if min(res.pad_scores) < settings.pad_threshold:
            res.reasons = [LIVENESS_FAILED]
            return res
    res.passed = True
    return res
