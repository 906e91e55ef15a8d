"""Passive presentation-attack detection (PAD) on one frame: the two MiniFASNet models of
minivision-ai/Silent-Face-Anti-Spoofing (Apache-2.0), the pair deepface's ``anti_spoofing=True`` runs.

Per face and per model (the scale comes from :data:`~smile2pay.models.manifest.PAD_MODELS`, the rest of
the preprocessing from each model's manifest entry):

1. a box ``scale`` times the face box (2.7x for MiniFASNetV2, 4.0x for MiniFASNetV1SE) around the same
   centre; the scale is capped so that the box fits the image (``min((H-1)/h, (W-1)/w, scale)``) and the box
   is shifted, not clipped, to lie inside the image (upstream ``CropImage._get_new_box``);
2. that crop resized to 80x80, BGR, raw 0-255 (no mean, no /255), NCHW float32;
3. softmax of the logits (class 0 and 2: attack kinds, class 1: real).

The two softmaxes are averaged; the score is the averaged probability of class 1 (``p_real``). Upstream calls
a face real when class 1 wins the averaged softmax (:meth:`PresentationAttackDetector.upstream_real`);
with three classes this is not quite ``p_real > 0.5``. The threshold to use is measured in
``benchmarks/results/pad_attacks.json`` (``smile2pay_tools.bench.pad_attacks``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ImageError, ModelError, RequestError
from ..imageio import from_array
from ..models.manifest import PAD_MODELS, ModelSpec, get_spec

#: Index of the "real" class in the models' output.
REAL_CLASS = 1
#: Averaged p_real at or above which a face is bona fide: BPCER 5 % on the LFW calibration half
#: (400 people, seed 0) of ``benchmarks/pad_attacks.py``, ``thresholds.operating`` in
#: benchmarks/results/pad_attacks.json. LFW photos are not live till frames: recalibrate on the deployment's own.
DEFAULT_THRESHOLD = 0.0938


def threshold_at_bpcer(bona_fide_scores, bpcer: float) -> float:
    """The smallest score ``t`` with at most ``bpcer`` of ``bona_fide_scores`` below it (a face is bona fide when
    ``p_real >= t``): how the shipped threshold and ``smile2pay calibrate-pad`` set it."""
    s = np.sort(np.asarray(bona_fide_scores, np.float64).ravel())
    if not s.size:
        raise ValueError("no bona fide scores")
    k = int(math.floor(float(bpcer) * s.size))
    return float(s[min(k, s.size - 1)])


@dataclass(frozen=True)
class PADModel:
    spec: ModelSpec
    session: object
    scale: float
    input_name: str
    output_name: str


def crop_box(image_size: tuple[int, int], box, scale: float) -> tuple[int, int, int, int]:
    """The context box of one model, upstream geometry: ``image_size`` = (width, height), ``box`` =
    x1, y1, x2, y2 of the face. Returns inclusive integer corners (x1, y1, x2, y2) inside the image."""
    src_w, src_h = int(image_size[0]), int(image_size[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    box_w, box_h = x2 - x1, y2 - y1
    scale = min((src_h - 1) / box_h, (src_w - 1) / box_w, float(scale))
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x1 + box_w / 2.0, y1 + box_h / 2.0
    lx, ly = cx - new_w / 2.0, cy - new_h / 2.0
    rx, ry = cx + new_w / 2.0, cy + new_h / 2.0
    if lx < 0:
        rx -= lx
        lx = 0.0
    if ly < 0:
        ry -= ly
        ly = 0.0
    if rx > src_w - 1:
        lx -= rx - src_w + 1
        rx = src_w - 1
    if ry > src_h - 1:
        ly -= ry - src_h + 1
        ry = src_h - 1
    return int(lx), int(ly), int(rx), int(ry)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class PresentationAttackDetector:
    """Face box(es) in a BGR frame -> ``p_real`` (averaged softmax of the two MiniFASNet models).

    ``PresentationAttackDetector(settings)`` resolves both files through the model store (sha256 checked:
    ``ModelError`` ``MODEL_MISSING`` / ``MODEL_CHECKSUM_MISMATCH``) and creates their sessions with
    :func:`smile2pay.models.runtime.create_session` (``settings.threads``, ``settings.providers``).
    :meth:`from_pipeline` reuses a :class:`~smile2pay.pipeline.FacePipeline`'s settings and store.
    """

    def __init__(self, settings=None, *, store=None, models: tuple[str, ...] | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        from ..config import Settings
        from ..models.runtime import create_session
        from ..models.store import ModelStore

        self.settings = settings if settings is not None else Settings.from_env()
        self.store = store if store is not None else ModelStore(self.settings.model_dir_candidates(),
                                                                verify=self.settings.verify_checksums)
        self.threshold = self._threshold(threshold)
        names = tuple(models) if models is not None else tuple(PAD_MODELS)
        self.providers = {}
        self.models: list[PADModel] = []
        for name in names:
            spec = get_spec(name)
            if name not in PAD_MODELS:
                raise ModelError(f"{name!r} is not a presentation-attack model; known: {sorted(PAD_MODELS)}",
                                 code="MODEL_UNKNOWN", model=name)
            path, data = self.store.read(name)    # checked bytes, loaded as they were checked
            sess, report = create_session(data, threads=self.settings.threads,
                                          providers=self.settings.providers, name=name,
                                          rewrite=self.settings.graph_rewrite)
            self.providers[name] = report
            inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
            w, h = spec.input_size or (80, 80)
            if len(inp.shape) != 4 or list(inp.shape[1:]) != [3, h, w] or out.shape[-1] != 3:
                raise ModelError(f"{spec.file}: expected input [N,3,{h},{w}] and 3 logits, got {inp.shape} -> "
                                 f"{out.shape}", code="MODEL_LOAD_FAILED", model=name, file=str(path))
            self.models.append(PADModel(spec, sess, PAD_MODELS[name], inp.name, out.name))
        if not self.models:
            raise ModelError("no presentation-attack model to load", code="MODEL_UNKNOWN")

    @classmethod
    def from_pipeline(cls, pipeline, **kw) -> "PresentationAttackDetector":
        return cls(pipeline.settings, store=pipeline.store, **kw)

    # -- input checks -----------------------------------------------------------------------------
    @staticmethod
    def _threshold(value) -> float:
        try:
            t = float(value)
        except (TypeError, ValueError):
            t = float("nan")
        if not (0.0 <= t <= 1.0):
            raise RequestError(f"threshold must be a number in [0, 1], got {value!r}", code="REQUEST_INVALID",
                               field="threshold")
        return t

    @staticmethod
    def _image(image) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise ImageError(f"expected a BGR NumPy array, got {type(image).__name__}", code="IMAGE_BAD_TYPE",
                             got=type(image).__name__)
        img = from_array(image)
        if min(img.shape[:2]) < 2:
            raise ImageError(f"image is {img.shape[1]}x{img.shape[0]}; too small for a face crop",
                             code="IMAGE_TOO_SMALL", width=img.shape[1], height=img.shape[0])
        return img

    @staticmethod
    def _boxes(boxes, image_shape) -> np.ndarray:
        try:
            b = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError):
            raise RequestError("boxes must be numbers x1, y1, x2, y2", code="REQUEST_INVALID",
                               field="box") from None
        if b.size == 0:
            return np.zeros((0, 4), np.float64)
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[1] < 4:
            raise RequestError(f"a box is 4 numbers x1, y1, x2, y2 (N boxes: an (N, 4) array); got shape "
                               f"{list(np.shape(boxes))}", code="REQUEST_INVALID", field="box")
        b = b[:, :4]   # a detector row x1, y1, x2, y2, score is accepted as well
        h, w = image_shape[:2]
        for i, (x1, y1, x2, y2) in enumerate(b):
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise RequestError(f"box {i} has a non-finite coordinate", code="REQUEST_INVALID", field="box",
                                   index=i)
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise RequestError(f"box {i} ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) is empty: x2 > x1 and "
                                   f"y2 > y1 are needed", code="REQUEST_INVALID", field="box", index=i)
            if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
                raise RequestError(f"box {i} lies outside the {w}x{h} image", code="REQUEST_INVALID",
                                   field="box", index=i)
        return b

    # -- stages -----------------------------------------------------------------------------------
    @staticmethod
    def crop(image: np.ndarray, box, scale: float, size: tuple[int, int] = (80, 80)) -> np.ndarray:
        """One model's input crop (BGR uint8, ``size`` = (width, height)) of a validated image and box."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = crop_box((w, h), box, scale)
        patch = image[y1:y2 + 1, x1:x2 + 1]
        return cv2.resize(patch, (int(size[0]), int(size[1])))

    def preprocess(self, image: np.ndarray, boxes) -> list[np.ndarray]:
        """Per model, the (N, 3, 80, 80) float32 tensor of every box."""
        img = self._image(image)
        b = self._boxes(boxes, img.shape)
        out = []
        for m in self.models:
            size = m.spec.input_size or (80, 80)
            if not len(b):
                out.append(np.zeros((0, 3, int(size[1]), int(size[0])), np.float32))
                continue
            crops = np.stack([self.crop(img, bb, m.scale, size) for bb in b])
            out.append(m.spec.to_blob(crops))
        return out

    def model_probabilities(self, image: np.ndarray, boxes) -> np.ndarray:
        """(N, M, 3) float64 softmax of each of the M models for each box (class 1 = real), in ``self.models``
        order: what :meth:`probabilities` averages."""
        blobs = self.preprocess(image, boxes)
        if blobs[0].shape[0] == 0:
            return np.zeros((0, len(self.models), 3), np.float64)
        out = []
        for m, blob in zip(self.models, blobs):
            try:
                logits = m.session.run([m.output_name], {m.input_name: blob})[0]
            except Exception as e:  # onnxruntime raises its own exception types
                raise ModelError(f"{m.spec.name} failed to run: {e}", code="MODEL_LOAD_FAILED",
                                 model=m.spec.name) from e
            out.append(_softmax(logits))
        return np.stack(out, axis=1)

    def probabilities(self, image: np.ndarray, boxes) -> np.ndarray:
        """(N, 3) softmax averaged over the models (class 1 = real)."""
        p = self.model_probabilities(image, boxes)
        if p.shape[0] == 0:
            return np.zeros((0, 3), np.float32)
        return (p.sum(axis=1) / p.shape[1]).astype(np.float32)

    # -- public scores ----------------------------------------------------------------------------
    def scores(self, image: np.ndarray, boxes) -> np.ndarray:
        """(N,) float32 ``p_real`` in [0, 1] of each face box (higher = more likely bona fide)."""
        return self.probabilities(image, boxes)[:, REAL_CLASS]

    def score(self, image: np.ndarray, box) -> float:
        """``p_real`` of one face box x1, y1, x2, y2."""
        b = np.asarray(box, dtype=object)
        if b.ndim != 1:
            raise RequestError("score() takes one box x1, y1, x2, y2; use scores() for several",
                               code="REQUEST_INVALID", field="box")
        return float(self.scores(image, box)[0])

    def is_bona_fide(self, image: np.ndarray, box, threshold: float | None = None) -> bool:
        """``score >= threshold`` (default: this detector's ``threshold``)."""
        t = self.threshold if threshold is None else self._threshold(threshold)
        return self.score(image, box) >= t

    @staticmethod
    def upstream_real(probabilities: np.ndarray) -> np.ndarray:
        """Upstream's decision on (N, 3) averaged softmaxes: real where class 1 wins."""
        p = np.asarray(probabilities)
        return p.argmax(axis=1) == REAL_CLASS
