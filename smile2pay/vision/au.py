"""Facial action units (AUs): the trained AU network and the MediaPipe blendshape teacher.

Two backends, same output shape (``dict`` AU name -> probability-like score in [0, 1]):

* ``model`` (default): :class:`AUModel`, the project's own ONNX network (``au_mobile``). Input: the
  AU-aligned crop (:func:`~smile2pay.vision.align.norm_crop` with ``pad=0.15``), resized to the
  network input (ModelSpec ``input_size``) with ``cv2.INTER_AREA``, BGR->RGB, ``(x - 127.5) / 127.5``.
  Outputs per-AU presence probabilities (sigmoid inside the graph) and an L2-normalised AU embedding.
  The AU names are stored in the ONNX metadata (``au_names``), so the runtime never guesses them.
* ``blendshapes``: :class:`BlendshapeTeacher`, MediaPipe FaceMesh v2 (478 points) + the blendshape
  model (52 ARKit blendshapes), mapped to AU proxies by :data:`BLENDSHAPE_AU_MAP`. Strong for AU12
  (mouthSmile), weak for AU6 (eyeSquint; cheekSquint stays ~0). No embedding.
* ``both``: the model's probabilities and embedding; for the AUs the teacher is strong on (those it
  pseudo-labelled in training: teacher AUC >= 0.85 on the training subjects, listed in the ONNX
  metadata), the score is the mean of the model probability and the teacher proxy Platt-calibrated
  with the training data's parameters (also in the metadata); elsewhere the model alone.

Training code lives in :mod:`smile2pay_tools.train` and is never imported here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import ModelError
from ..metrics.probability import logit, sigmoid
# AU_NAMES: the AUs the shipped AU model outputs, in output order (declared in its manifest entry; the ONNX
# file's 'au_names' metadata must agree). A loaded model publishes its own as ``AUModel.au_names``.
from ..models.manifest import AU_NAMES, ModelSpec  # noqa: F401  (AU_NAMES re-exported)
from .align import AU_PAD, norm_crop

BACKENDS = ("model", "blendshapes", "both")

#: MediaPipe blendshape subset indices (kLandmarksSubsetIdxs, face_blendshapes_graph.cc).
LANDMARKS_SUBSET_IDXS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153,
    154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249,
    251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314,
    317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382,
    384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473,
    474, 475, 476, 477], dtype=np.int64)

BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight")

#: AU proxy = mean of these blendshapes (ARKit <-> FACS correspondence; AU6 uses eyeSquint because
#: cheekSquint stays ~0 in this model, see ../shared/MEASURING.md).
BLENDSHAPE_AU_MAP: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4": ("browDownLeft", "browDownRight"),
    "AU5": ("eyeWideLeft", "eyeWideRight"),
    "AU6": ("eyeSquintLeft", "eyeSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU9": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU17": ("mouthShrugLower",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU23": ("mouthPressLeft", "mouthPressRight"),
    "AU24": ("mouthPressLeft", "mouthPressRight"),
    "AU25": ("jawOpen",),
    "AU26": ("jawOpen",),
    "AU27": ("jawOpen",),
    "AU43": ("eyeBlinkLeft", "eyeBlinkRight"),
}
_BS_INDEX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
_AU_ROWS = {au: [_BS_INDEX[b] for b in bs] for au, bs in BLENDSHAPE_AU_MAP.items()}


def blendshapes_to_aus(bs: np.ndarray) -> dict[str, float]:
    """(52,) blendshape scores -> AU proxy scores (see :data:`BLENDSHAPE_AU_MAP`)."""
    bs = np.asarray(bs, dtype=np.float32).reshape(-1)
    return {au: float(bs[rows].mean()) for au, rows in _AU_ROWS.items()}


def blendshapes_to_au_array(bs: np.ndarray, names) -> np.ndarray:
    """(N, 52) -> (N, len(names)) AU proxies; NaN for an AU the map does not cover."""
    bs = np.asarray(bs, dtype=np.float32).reshape(-1, 52)
    out = np.full((bs.shape[0], len(names)), np.nan, np.float32)
    for j, n in enumerate(names):
        if n in _AU_ROWS:
            out[:, j] = bs[:, _AU_ROWS[n]].mean(1)
    return out


def au_crop(image: np.ndarray, landmarks5: np.ndarray, size: int = 112, pad: float = AU_PAD) -> np.ndarray:
    """The AU-aligned crop (ArcFace template padded by ``pad`` on each side)."""
    return norm_crop(image, landmarks5, size=size, pad=pad)


@dataclass
class AUResult:
    probs: dict[str, float]
    embedding: np.ndarray | None = None
    teacher: dict[str, float] | None = field(default=None)


# ------------------------------------------------------------------------------------- model
class AUModel:
    """The trained AU network: AU crop(s) -> (probabilities (N, K), L2-normalised embeddings (N, D))."""

    def __init__(self, spec: ModelSpec, session) -> None:
        self.spec = spec
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        outs = [o.name for o in session.get_outputs()]
        self.prob_name = "au_probs" if "au_probs" in outs else outs[0]
        self.emb_name = "au_embedding" if "au_embedding" in outs else outs[1]
        meta = session.get_modelmeta().custom_metadata_map
        if "au_names" in meta:
            #: the AUs this network outputs, in output order (what a rule may name: parse_rule(known=...))
            self.au_names: tuple[str, ...] = tuple(json.loads(meta["au_names"]))
        else:  # pragma: no cover - every shipped model carries its names
            raise ValueError(f"{spec.file}: no 'au_names' metadata in the ONNX file")
        if spec.au_names and self.au_names != tuple(spec.au_names):
            raise ModelError(f"{spec.file}: the file outputs {', '.join(self.au_names)}, its manifest entry "
                             f"{spec.name!r} declares {', '.join(spec.au_names)}",
                             code="MODEL_CHECKSUM_MISMATCH", model=spec.name)
        self.thresholds = json.loads(meta.get("thresholds", "null")) or {}
        # teacher calibration (Platt a, b per AU on the training data) and the AUs the teacher is
        # strong on (pseudo-labelled in training): used by au_backend="both"
        self.teacher_calibration = json.loads(meta.get("teacher_calibration", "null")) or {}
        self.teacher_aus = tuple((json.loads(meta.get("trainset", "null")) or {}).get("pseudo_aus", ()))
        self.size = spec.input_size[0] if spec.input_size else int(inp.shape[2])

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        """BGR uint8 AU crops of any size -> NCHW float32 blob (exactly the training preprocessing)."""
        return self.spec.to_blob(np.stack([resize_crop(c, self.size) for c in crops]))

    def run(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not crops:
            return np.zeros((0, len(self.au_names)), np.float32), np.zeros((0, 0), np.float32)
        probs, emb = self.session.run([self.prob_name, self.emb_name], {self.input_name: self.preprocess(crops)})
        return probs.astype(np.float32), emb.astype(np.float32)

    def predict(self, crop: np.ndarray) -> AUResult:
        p, e = self.run([crop])
        return AUResult(dict(zip(self.au_names, map(float, p[0]))), e[0])


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize an AU crop to the network input (INTER_AREA when shrinking, as in training)."""
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    h, w = crop.shape[:2]
    if (h, w) == (size, size):
        return crop
    interp = cv2.INTER_AREA if h > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


# ----------------------------------------------------------------------------------- teacher
class BlendshapeTeacher:
    """MediaPipe FaceMesh v2 + blendshapes (ONNX conversions), seeded from a detector box + 5 points.

    ROI: a square of ``roi_scale`` x the longer box side, centred on the box, rotated so the eye
    line is horizontal, warped to 256x256 RGB in [0, 1] (NHWC). Out-of-image area is filled grey,
    which is what makes 48x48 CK+ crops work (upscale + pad). The 478 points are mapped back to
    image pixels; the 146-point subset feeds the blendshape model.
    """

    def __init__(self, landmark_session, blendshape_session, roi_scale: float = 1.5, fill: int = 128) -> None:
        self.lm_sess = landmark_session
        self.bs_sess = blendshape_session
        self.lm_in = landmark_session.get_inputs()[0].name
        self.lm_out = landmark_session.get_outputs()[0].name
        self.bs_in = blendshape_session.get_inputs()[0].name
        self.bs_out = blendshape_session.get_outputs()[0].name
        self.roi_scale = float(roi_scale)
        self.fill = int(fill)
        self.size = 256

    def roi_matrix(self, bbox: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = [float(v) for v in bbox[:4]]
        lm = np.asarray(landmarks5, np.float64).reshape(5, 2)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        side = self.roi_scale * max(x2 - x1, y2 - y1, 1.0)
        dx, dy = lm[1] - lm[0]
        angle = float(np.degrees(np.arctan2(dy, dx)))
        m = cv2.getRotationMatrix2D((cx, cy), angle, self.size / side)
        m[:, 2] += (self.size / 2.0 - cx, self.size / 2.0 - cy)
        return m

    def landmarks(self, image: np.ndarray, bbox: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, float]:
        """478 (x, y, z) points in image pixels and the face-presence probability."""
        m = self.roi_matrix(bbox, landmarks5)
        roi = cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(self.fill,) * 3)
        x = (roi[..., ::-1].astype(np.float32) / 255.0)[None]
        outs = self.lm_sess.run(None, {self.lm_in: x})
        pts = np.asarray(outs[0], np.float32).reshape(478, 3)
        presence = float(1.0 / (1.0 + np.exp(-float(np.asarray(outs[1]).reshape(-1)[0])))) if len(outs) > 1 else 1.0
        inv = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ inv[:, :2].T.astype(np.float32) + inv[:, 2].astype(np.float32)
        return np.concatenate([xy, pts[:, 2:3]], 1), presence

    def blendshapes(self, image: np.ndarray, bbox: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        pts, _ = self.landmarks(image, bbox, landmarks5)
        sub = pts[LANDMARKS_SUBSET_IDXS, :2].astype(np.float32)[None]
        return np.asarray(self.bs_sess.run([self.bs_out], {self.bs_in: sub})[0], np.float32).reshape(-1)

    def predict(self, image: np.ndarray, bbox: np.ndarray, landmarks5: np.ndarray) -> AUResult:
        return AUResult(blendshapes_to_aus(self.blendshapes(image, bbox, landmarks5)))


# --------------------------------------------------------------------------------- combined
def combine(model_probs: dict[str, float], teacher_proxies: dict[str, float], calibration: dict,
            teacher_aus) -> dict[str, float]:
    """``both`` backend: mean of the model probability and the calibrated teacher proxy for the AUs in
    ``teacher_aus`` (calibration: AU -> (a, b), p = sigmoid(a * proxy + b)); the model alone elsewhere."""
    out = dict(model_probs)
    for au in teacher_aus:
        if au in out and au in teacher_proxies and au in calibration:
            a, b = calibration[au][:2]
            pt = 1.0 / (1.0 + float(np.exp(-(a * teacher_proxies[au] + b))))
            out[au] = 0.5 * (out[au] + pt)
    return out


#: the AUs of the smile pattern that :func:`fuse_happy` strengthens with the expression classifier
FUSED_AUS = ("AU6", "AU12")
#: weight of the AU model in the fusion (1 - it: the classifier's P(happy)), on the logit scale. Chosen on the
#: calibration populations only (FER+ Valid, LFW calibration people: the best worst-case smile AUC of
#: min(AU6, AU12) over the grid 0.5..1.0), never on a test set: benchmarks/au_cross_population.py, docs/au.md
FUSION_WEIGHT = 0.8


def fuse_logits(p, happy, weight: float = FUSION_WEIGHT):
    """``sigmoid(weight * logit(p) + (1 - weight) * logit(happy))`` on scalars or numpy arrays (inputs clipped to
    [1e-6, 1 - 1e-6]): the one fusion formula, used per face by :func:`fuse_happy` and on whole score matrices by
    the benchmarks."""
    return sigmoid(weight * logit(p) + (1.0 - weight) * logit(happy))


def fuse_happy(probs: dict[str, float], happy: float, weight: float = FUSION_WEIGHT,
               aus: tuple[str, ...] = FUSED_AUS) -> dict[str, float]:
    """AU6 and AU12 with the expression classifier's P(happy) fused in (:func:`fuse_logits`). Monotone in each
    input, so ``min(AU6, AU12)`` after fusion is the fused smile score. Other AUs are returned unchanged;
    ``weight`` 1 returns ``probs`` as they were."""
    out = dict(probs)
    if weight >= 1.0:
        return out
    for au in aus:
        if au in out:
            out[au] = float(fuse_logits(out[au], happy, weight))
    return out


def centre_crop(crop: np.ndarray, pad: float) -> np.ndarray:
    """The unpadded (ArcFace-template) centre of an AU crop made with ``pad``: the expression classifier's input."""
    side = crop.shape[0]
    inner = int(round(side / (1.0 + 2.0 * pad)))
    o = (side - inner) // 2
    return crop[o:o + inner, o:o + inner]


class AUAnalyzer:
    """Fills ``Face.au_probs`` / ``Face.au_embedding`` with the chosen backend; with an expression classifier
    (``fer``), also ``Face.happy``, fused into AU6 / AU12 (:func:`fuse_happy`)."""

    def __init__(self, backend: str = "model", model: AUModel | None = None,
                 teacher: BlendshapeTeacher | None = None, crop_size: int = 112, pad: float = AU_PAD,
                 fer=None, fusion_weight: float = FUSION_WEIGHT) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"au_backend must be one of {BACKENDS}, got {backend!r}")
        if backend in ("model", "both") and model is None:
            raise ValueError(f"au_backend={backend!r} needs the AU model (the pack has none)")
        if backend in ("blendshapes", "both") and teacher is None:
            raise ValueError(f"au_backend={backend!r} needs the MediaPipe landmark + blendshape models")
        self.backend, self.model, self.teacher = backend, model, teacher
        self.crop_size, self.pad = int(crop_size), float(pad)
        self.fer, self.fusion_weight = fer, float(fusion_weight)

    @property
    def fusion(self) -> str:
        """What AU6 / AU12 hold: the AU stage as configured (reported by ``analyze`` and the decision)."""
        if self.fer is None or self.model is None or self.backend not in ("model", "both"):
            return "none"
        return f"fer_happy@{1.0 - self.fusion_weight:.2f}"

    @property
    def au_names(self) -> tuple[str, ...]:
        """The AUs ``Face.au_probs`` holds with this backend: the model's outputs (``model``, ``both``), the
        teacher's proxies (``blendshapes``)."""
        if self.model is not None and self.backend in ("model", "both"):
            return tuple(self.model.au_names)
        return tuple(BLENDSHAPE_AU_MAP)

    def analyze(self, faces) -> None:
        faces = [f for f in faces if f.image is not None]
        if not faces:
            return
        probs = emb = happy = None
        if self.model is not None and self.backend in ("model", "both"):
            crops = [norm_crop(f.image, f.landmarks, size=self.crop_size, pad=self.pad) for f in faces]
            probs, emb = self.model.run(crops)
            if self.fer is not None:
                happy = self.fer.happy([centre_crop(c, self.pad) for c in crops])
        for i, f in enumerate(faces):
            t = None
            if self.teacher is not None and self.backend in ("blendshapes", "both"):
                t = self.teacher.predict(f.image, f.bbox, f.landmarks).probs
            if probs is None:
                f.au_probs = t
                continue
            p = dict(zip(self.model.au_names, map(float, probs[i])))
            if t is not None:
                p = combine(p, t, self.model.teacher_calibration, self.model.teacher_aus)
            if happy is not None:
                f.happy = float(happy[i])
                p = fuse_happy(p, f.happy, self.fusion_weight)
            f.au_probs = p
            f.au_embedding = emb[i]
