"""Camera-like clips assembled from real still images (for tests and benchmarks; never committed).

A clip is ``n_neutral`` frames of a neutral photo then ``n_smile`` frames of a smiling photo of the
same person (CK+ neutral -> peak, LFW neutral -> happy), each placed on a 640x480 canvas and given
a little sensor-like noise so consecutive frames are not bit-identical stills. Clips are written as
MJPEG (concatenated JPEGs: Chromium's ``--use-file-for-fake-video-capture``) or AVI/MJPG (OpenCV).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

CANVAS = (640, 480)


def compose(img: np.ndarray, canvas: tuple[int, int] = CANVAS, face_frac: float = 0.8,
            background: int = 110) -> np.ndarray:
    """The image scaled to ``face_frac`` of the canvas height, centred on a plain background."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    w, h = canvas
    side = int(h * face_frac)
    s = side / max(img.shape[:2])
    r = cv2.resize(img, (int(round(img.shape[1] * s)), int(round(img.shape[0] * s))),
                   interpolation=cv2.INTER_CUBIC)
    out = np.full((h, w, 3), background, np.uint8)
    y0, x0 = (h - r.shape[0]) // 2, (w - r.shape[1]) // 2
    out[y0:y0 + r.shape[0], x0:x0 + r.shape[1]] = r
    return out


def clip_frames(segments: list[tuple[np.ndarray, int]], noise: float = 2.0, seed: int = 0,
                canvas: tuple[int, int] = CANVAS) -> list[np.ndarray]:
    """``segments``: (image, number of frames) in order. Returns BGR frames with Gaussian noise."""
    rng = np.random.default_rng(seed)
    out = []
    for img, n in segments:
        base = compose(img, canvas).astype(np.float32)
        for _ in range(n):
            fr = base + rng.normal(0.0, noise, base.shape) if noise > 0 else base
            out.append(np.clip(fr, 0, 255).astype(np.uint8))
    return out


def crossfade(a: np.ndarray, b: np.ndarray, k: int) -> list[np.ndarray]:
    """``k`` frames blending photo ``a`` into photo ``b`` (``b`` resized to ``a``; both BGR or grey), the
    ends excluded: the cheapest way to turn two stills into a "continuous" clip."""
    if b.shape != a.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return [cv2.addWeighted(a, 1.0 - i / (k + 1), b, i / (k + 1), 0.0) for i in range(1, k + 1)]


def write_mjpeg(frames: list[np.ndarray], path, quality: int = 90) -> Path:
    path = Path(path)
    with open(path, "wb") as fh:
        for fr in frames:
            ok, buf = cv2.imencode(".jpg", fr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            fh.write(buf.tobytes())
    return path


def write_avi(frames: list[np.ndarray], path, fps: float = 30.0) -> Path:
    path = Path(path)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not vw.isOpened():
        raise OSError(f"cannot write video {path}")
    for fr in frames:
        vw.write(fr)
    vw.release()
    return path


def read(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return img


# ------------------------------------------------------------------------------------------ data
def ck_pairs(data: Path) -> list[dict]:
    """CK+ neutral -> peak pairs (``ckplus_neutral_peak48/pairs_neutral_peak.csv``)."""
    with open(Path(data) / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv") as fh:
        return list(csv.DictReader(fh))


#: what :func:`ck_kind` calls a CK+ sequence whose two labels disagree
CK_AMBIGUOUS_NOTE = ("CK+ sequences whose peak is labelled happy but whose FACS codes lack AU6 or AU12 (4 of 309: "
                     "S056_004 12+25, S129_012 6+7+13, S135_012 13+25, S137_011 12+25): a smile by the emotion label "
                     "that LFW and FER+ smiles are judged by, not AU6+AU12 by the codes; neither a smile nor an "
                     "other expression, so kept out of both and reported on their own")


def ck_kind(row: dict) -> str:
    """A CK+ pair row's kind: ``"smile"`` (coded AU6+AU12), ``"ambiguous"`` (peak labelled happy, not coded
    AU6+AU12: see :data:`CK_AMBIGUOUS_NOTE`) or ``"other"`` (every other expression)."""
    if str(row["is_smile_au6_au12"]).strip() in ("1", "True", "true"):
        return "smile"
    return "ambiguous" if str(row.get("peak_label", "")).strip().lower() in ("happy", "happiness") else "other"


def smiling_people(data: Path, n: int = 2) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``n`` CK+ subjects with an AU6+AU12 sequence: ``(subject, neutral image, peak image)``."""
    out, seen = [], set()
    for r in ck_pairs(data):
        if r["is_smile_au6_au12"] == "1" and r["subject"] not in seen:
            seen.add(r["subject"])
            out.append((r["subject"], read(data / r["neutral_path"]), read(data / r["peak_path"])))
            if len(out) == n:
                return out
    raise ValueError(f"CK+ holds fewer than {n} subjects with an AU6+AU12 sequence")


def lfw_expression_people(data: Path, min_neutral: int = 2) -> list[dict]:
    """LFW people with >= ``min_neutral`` neutral and >= 1 happy photo (muxspace labels, agreeing
    with the Morishita smile label where it exists): [{subject, neutral: [...], happy: [...]}]."""
    by = defaultdict(lambda: {"neutral": [], "happy": []})
    with open(Path(data) / "lfw" / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            sm = r.get("smile_morishita", "")
            if r["label"] == "neutral" and sm in ("", "0"):
                by[r["subject"]]["neutral"].append(r["path"])
            elif r["label"] == "happiness" and sm in ("", "1"):
                by[r["subject"]]["happy"].append(r["path"])
    out = []
    for s, d in sorted(by.items()):
        if len(d["neutral"]) >= min_neutral and d["happy"]:
            out.append({"subject": s, "neutral": sorted(d["neutral"]), "happy": sorted(d["happy"])})
    return out
