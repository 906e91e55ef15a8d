"""One capture, not two photos: the frames of a payment must come from one continuous capture.

The cheapest attack on an expression-change liveness is two public photos of the victim, a neutral one and
a smiling one. Between the frames of one capture the light on the face and the head pose barely change
(an expression moves the mouth and cheeks, not the lighting); between two photos taken on different days
both change. Per frame, from the aligned identity crop and the 5 landmarks (grey only, so colour and
camera differences between datasets cannot leak in):

* **lighting pattern**: the 112 px aligned crop in grey, averaged over a 4x4 grid, standardised (zero mean,
  unit variance): where the light falls on the face, not how bright it is; and the same over a 6x3 grid of
  the upper half (eyes, brows, forehead: what a smile moves least);
* **yaw** and **roll** of the head from the 5 points (:func:`smile2pay.vision.align.pose_from_landmarks`);
* **balance**: the left half of the crop's mean grey minus the right half's, over the whole crop's mean: which
  side the light comes from (a symmetric expression barely moves it, two photos from different days often do);
* **contrast**: log of the crop's grey standard deviation over its mean. Both are unchanged by a camera's gain
  (auto-exposure scales every pixel alike), unlike raw brightness or contrast.

The last two were added on 2026-12-07 (``benchmarks/capture_continuity.py``: at the same bona fide cost they
flag more two-photo pairs than the first four alone); a calibration file without their scales scores the first
four only, with the limit it was fitted with.

The lighting cues read the **face window** of the crop (:data:`FACE_WINDOW`, since 2026-12-07, 12th stop), not
the whole crop: a tight face crop (CK+'s 48 px faces) aligned to 112 px leaves a border of warp fill, black as a
file and grey on a camera canvas, whose extent follows the alignment, hence the expression; read whole, it made
same-session pairs look like two photos (camera-like CK+ pairs were flagged 17 of 159 times against 2 as files).
A calibration file without ``window`` reads the whole crop, as its limits were fitted.

The change between two frames is one score: ``sqrt(sum_cue (change_cue / scale_cue)^2)`` with each cue's
scale its 75th percentile over same-session pairs; two frames are *discontinuous* when the score exceeds
``max_score`` (the largest score of those pairs times a margin): a pair moderately off on several cues counts,
not only one far off on one. Scales and limit come from same-session pairs (CK+ first frame -> peak frame of one
sequence, as files and as camera-like frames; half the subjects, the other half checks) and ship in the
calibration file: ``capture_continuity`` for bursts and ``capture_continuity_stream`` for streams (both six cues
on the face window, margin 0.8: the tightest whose tune-half flagged share is at most 2 %).
``benchmarks/capture_continuity.py`` measures them against pairs of different photos of the same person
(LFW neutral -> happy) and writes them; ``smile2pay calibrate-continuity`` fits them on a deployment's own
captures (:func:`fit_settings`). A burst is judged on **every pair** of its frames, not only
consecutive ones; a stream on every consecutive pair of processed frames between its neutral frame and its
smile (a hard cut between two photos is exactly such a jump), its decision frames (neutral, smile, relaxed)
against each other, and its smile and relaxed frames against the first frame of the neutral streak
(:mod:`smile2pay.stream.machine`). Consecutive pairs alone are not enough: two photos cross-faded over a few
frames change little from one frame to the next (56 of 200 such bursts of LFW victims were approved when only
consecutive frames were compared; ``benchmarks/two_photo_attack.py``), but the first and the last frame are
still two photos.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..vision.align import pose_from_landmarks

from ..reasons import CAPTURE_DISCONTINUITY  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class ContinuitySettings:
    #: per-cue scales (75th percentile of same-session changes) and the limit of the joint score
    scale_lighting: float = 1.4
    scale_upper: float = 1.35
    scale_yaw: float = 0.016
    scale_roll: float = 1.1
    max_score: float = 5.0
    enabled: bool = True
    #: the gain-invariant cues (None: not part of the score, as in calibration files written before them)
    scale_balance: float | None = None
    scale_contrast: float | None = None
    #: the part of the aligned crop the lighting cues read, (x0, y0, x1, y1) as fractions of its width and
    #: height (:data:`FACE_WINDOW`); None: the whole crop, as calibration files written before it
    window: tuple[float, float, float, float] | None = None

    def scales(self) -> dict:
        s = {"lighting": self.scale_lighting, "upper": self.scale_upper, "yaw": self.scale_yaw,
             "roll": self.scale_roll}
        if self.scale_balance is not None:
            s["balance"] = self.scale_balance
        if self.scale_contrast is not None:
            s["contrast"] = self.scale_contrast
        return s


@dataclass
class Signature:
    lighting: np.ndarray      # (16,) standardised grey means over a 4x4 grid of the aligned crop
    upper: np.ndarray         # (18,) the same over a 6x3 grid of its upper half
    yaw: float
    roll: float
    balance: float = 0.0      # (mean of the left half - mean of the right half) / mean
    contrast: float = 0.0     # log(std / mean)


@dataclass
class ContinuityResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)     # per consecutive pair: lighting, yaw, roll
    worst: dict | None = None

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "pairs": self.pairs, "worst": self.worst}


def check_window(window) -> tuple[float, float, float, float]:
    """``window`` as four floats (x0, y0, x1, y1), fractions of the crop with x0 < x1, y0 < y1 and each side at
    least 0.2 of the crop; ValueError otherwise."""
    try:
        w = tuple(float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be four numbers (x0, y0, x1, y1), got {window!r}") from None
    if len(w) != 4 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in w) \
            or w[2] - w[0] < 0.2 or w[3] - w[1] < 0.2:
        raise ValueError(f"window must be (x0, y0, x1, y1) in [0, 1] with sides of at least 0.2, got {window!r}")
    return w


def signature(crop: np.ndarray, landmarks: np.ndarray,
              window: tuple[float, float, float, float] | None = None) -> Signature:
    """The capture signature of one aligned face crop (any size; BGR or grey) and its 5 landmarks; the
    lighting cues read the ``window`` of the crop (fractions, :data:`FACE_WINDOW`), or all of it (None)."""
    import cv2

    c = np.asarray(crop)
    g = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) if c.ndim == 3 else c
    g = g.astype(np.float32)
    if window is not None:
        x0, y0, x1, y1 = window
        h, w = g.shape[:2]
        g = g[int(round(y0 * h)):max(int(round(y1 * h)), int(round(y0 * h)) + 2),
              int(round(x0 * w)):max(int(round(x1 * w)), int(round(x0 * w)) + 2)]

    def pattern(x, size):
        grid = cv2.resize(x, size, interpolation=cv2.INTER_AREA).ravel()
        return ((grid - grid.mean()) / (float(grid.std()) + 1e-6)).astype(np.float32)

    yaw, _, roll, _ = pose_from_landmarks(np.asarray(landmarks, np.float32))
    mean = float(g.mean()) + 1.0
    half = g.shape[1] // 2
    balance = (float(g[:, :half].mean()) - float(g[:, g.shape[1] - half:].mean())) / mean
    contrast = math.log((float(g.std()) + 1e-3) / mean)
    return Signature(pattern(g, (4, 4)), pattern(g[: g.shape[0] // 2], (6, 3)), float(yaw), float(roll),
                     float(balance), float(contrast))


def pair_change(a: Signature, b: Signature) -> dict:
    return {"lighting": float(np.linalg.norm(a.lighting - b.lighting)),
            "upper": float(np.linalg.norm(a.upper - b.upper)), "yaw": abs(a.yaw - b.yaw),
            "roll": abs(a.roll - b.roll), "balance": abs(a.balance - b.balance),
            "contrast": abs(a.contrast - b.contrast)}


def score(change: dict, s: ContinuitySettings) -> float:
    return math.sqrt(sum((change[k] / v) ** 2 for k, v in s.scales().items()))


def excess(change: dict, s: ContinuitySettings) -> float:
    """The joint change score over its limit (> 1 = discontinuous)."""
    return score(change, s) / s.max_score


#: the face inside the aligned 112 px crop, without its corners: (x0, y0, x1, y1) as fractions. Chosen on
#: same-session data alone: the largest centred box in which fewer than 1 % of the CK+ 48 px faces' aligned crops
#: show the warp's fill (a tight 48 px crop leaves black borders; on a camera-like canvas its grey), whose
#: extent moves with the alignment and so with the expression (``benchmarks/capture_continuity.py``).
FACE_WINDOW = (0.24, 0.23, 0.76, 0.89)

FOUR_CUES = ("lighting", "upper", "yaw", "roll")
ALL_CUES = FOUR_CUES + ("balance", "contrast")


def fit_settings(changes: list[dict], cues: tuple[str, ...] = ALL_CUES, percentile: float = 75.0,
                 margin: float = 1.0, window: tuple[float, float, float, float] | None = None
                 ) -> ContinuitySettings:
    """Limits from same-session frame pairs (:func:`pair_change` dicts of signatures read with ``window``):
    each cue's scale is its ``percentile`` over the pairs, the limit the largest joint score of the pairs times
    ``margin``. The four pose / lighting cues are always part of the score; ``balance`` and ``contrast`` only
    when named in ``cues``. The settings carry ``window``: they score signatures read the same way only."""
    if not changes:
        raise ValueError("no same-session pairs to fit continuity limits on")
    unknown = set(cues) - set(ALL_CUES)
    if unknown or not set(FOUR_CUES) <= set(cues):
        raise ValueError(f"cues must include {FOUR_CUES} and may add balance / contrast, got {cues}")
    if not 0.0 < margin <= 10.0 or not 0.0 < percentile <= 100.0:
        raise ValueError(f"margin must be in (0, 10] and percentile in (0, 100], got {margin}, {percentile}")
    sc = {k: max(float(np.percentile([c[k] for c in changes], percentile)), 1e-6) for k in cues}
    s = ContinuitySettings(scale_lighting=sc["lighting"], scale_upper=sc["upper"], scale_yaw=sc["yaw"],
                           scale_roll=sc["roll"], max_score=1.0,
                           window=None if window is None else check_window(window),
                           **{f"scale_{k}": sc[k] for k in cues if k not in FOUR_CUES})
    return ContinuitySettings(**{**s.__dict__, "max_score": margin * max(max(score(c, s) for c in changes), 1e-6)})


def check(signatures: list[Signature], settings: ContinuitySettings) -> ContinuityResult:
    """Every pair of frames must be continuous, not only consecutive ones (see the module docstring): two
    photos cross-faded over a few frames change little from one frame to the next, but the first and the
    last frame are still two photos. ``pairs`` lists the consecutive pairs, ``worst`` the worst pair of all."""
    res = ContinuityResult(passed=True)
    if not settings.enabled or len(signatures) < 2:
        return res

    def entry(i: int, j: int) -> tuple[dict, float]:
        ch = pair_change(signatures[i], signatures[j])
        x = excess(ch, settings)
        return {"frames": [i, j], **{k: round(v, 4) for k, v in ch.items()}, "excess": round(x, 3)}, x

    worst, worst_x = None, -math.inf
    for i in range(len(signatures) - 1):
        for j in range(i + 1, len(signatures)):
            e, x = entry(i, j)
            if j == i + 1:
                res.pairs.append(e)
            if x > worst_x:
                worst, worst_x = e, x
    res.worst = worst
    if worst_x > 1.0:
        res.passed = False
        res.reasons = [CAPTURE_DISCONTINUITY]
    return res
