"""Face quality gates with reason codes (pure functions of the face and its aligned crop)."""
from __future__ import annotations

import cv2
import numpy as np

from ..config import QualitySettings
from ..reasons import BLURRY, EXTREME_POSE, FACE_TOO_SMALL, LOW_DET_SCORE, OVEREXPOSED, UNDEREXPOSED
from ..types import Quality
from .align import pose_from_landmarks


def assess(det_score: float, landmarks: np.ndarray, identity_crop: np.ndarray,
           settings: QualitySettings) -> Quality:
    """Run every gate; a failing gate appends its reason code."""
    yaw, pitch, roll, iod = pose_from_landmarks(landmarks)
    grey = cv2.cvtColor(identity_crop, cv2.COLOR_BGR2GRAY) if identity_crop.ndim == 3 else identity_crop
    # Measure sharpness and exposure on the central face region (ignores the black warp border).
    centre = grey[16:104, 16:96]
    sharp = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    bright = float(centre.mean())
    clipped = float(np.mean((centre <= 5) | (centre >= 250)))
    q = Quality(interocular_px=iod, yaw=yaw, pitch=pitch, roll_deg=roll, sharpness=sharp,
                brightness=bright, clipped=clipped)
    if det_score < settings.min_det_score:
        q.reasons.append(LOW_DET_SCORE)
    if iod < settings.min_interocular_px:
        q.reasons.append(FACE_TOO_SMALL)
    if abs(yaw) > settings.max_yaw or abs(pitch) > settings.max_pitch or abs(roll) > settings.max_roll_deg:
        q.reasons.append(EXTREME_POSE)
    if sharp < settings.min_sharpness:
        q.reasons.append(BLURRY)
    dark_clip = float(np.mean(centre <= 5))
    light_clip = float(np.mean(centre >= 250))
    if bright < settings.min_brightness or dark_clip > settings.max_clipped_fraction:
        q.reasons.append(UNDEREXPOSED)
    if bright > settings.max_brightness or light_clip > settings.max_clipped_fraction:
        q.reasons.append(OVEREXPOSED)
    return q
