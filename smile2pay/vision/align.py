"""Pure geometry: 5-point templates, similarity transforms, aligned crops.

One function, :func:`norm_crop`, makes both crops of the design:

* identity: the ArcFace 112x112 template (``pad=0``), exactly InsightFace's ``norm_crop``;
* AU: the same template padded by 0.15 on every side (``pad=0.15``), so the crop
  shows more of the face around the landmarks (brows, cheeks, chin: where the AU muscles act).
"""
from __future__ import annotations

import cv2
import numpy as np

#: ArcFace 5-point template for a 112x112 crop (left eye, right eye, nose, left mouth, right mouth).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

#: Padding of the AU crop template (design card).
AU_PAD = 0.15


def template(size: int = 112, pad: float = 0.0) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop whose borders are widened by ``pad``
    (a fraction of the unpadded crop side, on each side)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    unit = ARCFACE_DST / 112.0
    return ((unit + pad) / (1.0 + 2.0 * pad)) * float(size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991), the same estimator as ``skimage.transform.SimilarityTransform.estimate``.
    Returns the 2x3 affine matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets of the same shape, got {src.shape} and {dst.shape}")
    # In 2D the Umeyama estimate has a closed form: with the centred points as complex numbers, scale x
    # rotation is the least-squares a = sum(conj(s) d) / sum(|s|^2) (a proper rotation, as Umeyama's
    # reflection guard gives). Same matrix up to float rounding, without an SVD.
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = float((s_c ** 2).sum())
    if var_s <= 0:
        raise ValueError("source points are degenerate (all equal)")
    re = float((s_c[:, 0] * d_c[:, 0] + s_c[:, 1] * d_c[:, 1]).sum()) / var_s
    im = float((s_c[:, 0] * d_c[:, 1] - s_c[:, 1] * d_c[:, 0]).sum()) / var_s
    m = np.array([[re, -im, 0.0], [im, re, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def estimate_norm(landmarks: np.ndarray, size: int = 112, pad: float = 0.0) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if lm.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks of (x, y), got shape {np.asarray(landmarks).shape}")
    return similarity_transform(lm, template(size, pad))


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 112, pad: float = 0.0) -> np.ndarray:
    """Warp ``image`` so the 5 landmarks land on the (padded) template; returns (size, size, C)."""
    m = estimate_norm(landmarks, size, pad)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """Rough head pose from 5 points: (yaw, pitch, roll_deg, interocular_px).

    * roll: angle of the eye line;
    * yaw: horizontal offset of the nose from the eye/mouth mid-line, in inter-ocular units after
      removing roll (0 frontal, about +-0.5 at 45 degrees);
    * pitch: vertical position of the nose between the eye line and the mouth line, relative to a
      frontal face (the ArcFace template), as a signed deviation.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    le, re, nose, lmo, rmo = lm
    eye_vec = re - le
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return 0.0, 0.0, 0.0, 0.0
    roll = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    c, s = np.cos(-np.radians(roll)), np.sin(-np.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    p = (lm - lm[:2].mean(0)) @ rot.T / iod
    eye_mid = p[:2].mean(0)
    mouth_mid = p[3:].mean(0)
    mid_x = 0.5 * (eye_mid[0] + mouth_mid[0])
    yaw = float(p[2, 0] - mid_x)
    span = mouth_mid[1] - eye_mid[1]
    if span <= 1e-6:
        return yaw, 1.0, roll, iod
    t = ARCFACE_DST
    frontal = (t[2, 1] - t[:2, 1].mean()) / (t[3:, 1].mean() - t[:2, 1].mean())
    pitch = float((p[2, 1] - eye_mid[1]) / span - frontal)
    return yaw, pitch, roll, iod
