"""Face detection behind one small interface: SCRFD (InsightFace model_zoo) or YuNet (MIT).

``Detector.detect(image)`` returns :class:`Detections` in source-image pixels with 5 landmarks
per face in InsightFace order (left eye, right eye, nose, left mouth corner, right mouth corner;
"left" = smaller x in the image).

Attempt ladder (a till frame holds one large face, so the cheap attempt usually wins):
each size in ``det_sizes`` in order, stopping at the first that finds a face; if none does,
the image is padded on every side and the ladder runs again. Padding is what finds faces that
fill the whole frame (close-up selfies, LFW 250x250 crops, CK+ 48x48 crops).

:data:`DETECTORS` is the one registry of detector choices (``Settings.detector``, ``--detector``): name ->
class and the model it runs. OpenCV is imported when a detector runs, so the registry is cheap to import.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError

log = logging.getLogger(__name__)


@dataclass
class Detections:
    boxes: np.ndarray      # (N, 4) x1 y1 x2 y2
    scores: np.ndarray     # (N,)
    landmarks: np.ndarray  # (N, 5, 2)
    attempt: str = ""      # which rung of the ladder found them

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(attempt: str = "") -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0, 5, 2), np.float32), attempt)


def fitted_input(size: int, h: int, w: int, stride: int = 32) -> tuple[int, int]:
    """(width, height) of the detector input for an ``h`` x ``w`` image at ladder ``size``: the image is
    scaled so that its long side is ``size`` (the scale of a ``size`` square, as InsightFace's letterbox),
    and the short side of the input is cut to the scaled image rounded up to the network's largest stride
    instead of padded to ``size``. A 640x480 camera frame at 320 runs on 320x256, not 320x320: the same
    scale and the same faces for 20 % fewer pixels (the padding rows are zeros the network would convolve).
    """
    long_side = max(h, w)
    scaled = min(h, w) * size / float(long_side) if long_side else float(size)
    short = min(size, max(stride, math.ceil(scaled / stride) * stride))
    return (size, short) if w >= h else (short, size)


class Detector:
    """Base: subclasses implement :meth:`_detect_at` for one ladder size."""

    name = "detector"
    #: the onnxruntime session the network runs on (None: the detector loads its file some other way)
    session = None

    def __init__(self, det_sizes: tuple[int, ...] = (320, 640), threshold: float = 0.5,
                 pad_retry: float = 0.5) -> None:
        self.det_sizes = tuple(det_sizes)
        self.threshold = float(threshold)
        self.pad_retry = float(pad_retry)

    #: ``detect_window(..., threshold=)`` below the detector's own threshold is honoured (a burst's first look
    #: counts faint second-face candidates with it); a detector without it gets no first look
    lower_threshold_ok = False

    def _detect_at(self, image: np.ndarray, size: int, threshold: float | None = None) -> Detections:  # pragma: no cover
        raise NotImplementedError

    def forward_blob(self, image: np.ndarray, size: int) -> np.ndarray:
        """The input tensor :attr:`session` sees for ``image`` at one ladder size (bare-forward timing)."""
        raise NotImplementedError(f"{self.name} does not run on an onnxruntime session")

    def detect(self, image: np.ndarray, sizes: tuple[int, ...] | None = None) -> Detections:
        sizes = tuple(sizes or self.det_sizes)
        for size in sizes:
            d = self._detect_at(image, size)
            if len(d):
                d.attempt = str(size)
                return d
        if self.pad_retry > 0:
            import cv2

            h, w = image.shape[:2]
            p = int(round(self.pad_retry * max(h, w)))
            padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            for size in sizes:
                d = self._detect_at(padded, size)
                if len(d):
                    d.boxes = d.boxes - p
                    d.landmarks = d.landmarks - p
                    d.attempt = f"pad:{size}"
                    return d
        return Detections.empty("none")

    def detect_window(self, image: np.ndarray, window, threshold: float | None = None) -> Detections:
        """Faces inside ``window`` (a :class:`smile2pay.vision.track.Window`) only, at its one input size,
        in source-image pixels; no ladder, no padding retry (the caller falls back to :meth:`detect`).
        ``threshold``: a score threshold other than the detector's (only where :attr:`lower_threshold_ok`)."""
        crop = np.ascontiguousarray(image[window.y1:window.y2, window.x1:window.x2])
        if min(crop.shape[:2]) < 8:       # a window outside this image: nothing to look at
            return Detections.empty(f"window:{window.size}")
        d = self._detect_at(crop, window.size, threshold)
        if len(d):
            off = np.array([window.x1, window.y1], np.float32)
            d.boxes = d.boxes + np.tile(off, 2)
            d.landmarks = d.landmarks + off
        d.attempt = f"window:{window.size}"
        return d


class SCRFDDetector(Detector):
    """InsightFace SCRFD (det_500m, det_2.5g, det_10g) through ``insightface.model_zoo.SCRFD``,
    fed with a session made by :mod:`smile2pay.models.runtime`."""

    name = "scrfd"

    def __init__(self, model_path: Path, session, **kw) -> None:
        super().__init__(**kw)
        from insightface.model_zoo.scrfd import SCRFD

        try:
            # static_shape_sessions=False: every size runs on our one session (created in runtime.py)
            self._net = SCRFD(model_file=str(model_path), session=session, static_shape_sessions=False)
        except Exception as e:  # insightface raises AssertionError/RuntimeError on an unexpected graph
            raise ModelError(f"{model_path} is not an SCRFD detection graph: {e}", code="MODEL_LOAD_FAILED",
                             file=str(model_path)) from e
        self._net.det_thresh = self.threshold
        if not self._net.use_kps:
            raise ModelError(f"{model_path} has no 5-point landmark outputs; smile2pay needs them",
                             code="MODEL_LOAD_FAILED", file=str(model_path))
        self.session = session
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}   # anchor centres per (h, w, stride)

    def forward_blob(self, image: np.ndarray, size: int) -> np.ndarray:
        """SCRFD's input at ladder ``size``: exactly the tensor :meth:`_detect_at` runs the session on."""
        h, w = image.shape[:2]
        return self._input(image, fitted_input(size, h, w))[0]

    def _input(self, image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
        """(NCHW blob, scale) as ``insightface.model_zoo.SCRFD.detect`` builds them: the image scaled into the
        top-left of an ``input_size`` (width, height) canvas, RGB, (x - mean) / std."""
        import cv2

        net = self._net
        iw, ih = input_size
        h, w = image.shape[:2]
        if float(h) / w > float(ih) / iw:
            new_h = ih
            new_w = int(new_h / (float(h) / w))
        else:
            new_w = iw
            new_h = int(new_w * (float(h) / w))
        canvas = np.zeros((ih, iw, 3), dtype=np.uint8)
        canvas[:new_h, :new_w, :] = cv2.resize(image, (new_w, new_h))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / net.input_std, (iw, ih), (net.input_mean,) * 3, swapRB=True)
        return blob, float(new_h) / h

    lower_threshold_ok = True

    def _detect_at(self, image: np.ndarray, size: int, threshold: float | None = None) -> Detections:
        h, w = image.shape[:2]
        det, kps = self._decode(image, fitted_input(size, h, w), threshold)
        if det.shape[0] == 0:
            return Detections.empty()
        return Detections(det[:, :4].astype(np.float32), det[:, 4].astype(np.float32),
                          kps.astype(np.float32))

    def _anchors(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        a = self._centres.get(key)
        if a is None:
            a = (np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            a = np.repeat(a, self._net._num_anchors, axis=0)
            if len(self._centres) < 64:
                self._centres[key] = a
        return a

    def _decode(self, image: np.ndarray, input_size: tuple[int, int],
                threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``insightface.model_zoo.SCRFD.detect(image, input_size, det_thresh)`` for one input size, with the
        same resize, blob, session outputs, score threshold, ordering and NMS, but box and landmark offsets
        decoded for the anchors above the threshold only (insightface decodes all ~3,000 anchors of a 320
        input and then keeps a handful): the same numbers for less Python work a call. Checked against
        insightface's own detect in tests/integration/test_detect_decode.py."""
        net = self._net
        iw, ih = input_size
        blob, det_scale = self._input(image, input_size)
        outs = self.session.run(net.output_names, {net.input_name: blob})
        fmc, thr = net.fmc, float(self.threshold if threshold is None else threshold)

        def out(k):
            return outs[k][0] if net.batched else outs[k]

        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(net._feat_stride_fpn):
            scores = out(idx)
            pos = np.where(scores >= thr)[0]
            if not len(pos):
                continue
            centres = self._anchors(ih // stride, iw // stride, stride)[pos]
            d = out(idx + fmc)[pos] * stride
            boxes = np.stack([centres[:, 0] - d[:, 0], centres[:, 1] - d[:, 1],
                              centres[:, 0] + d[:, 2], centres[:, 1] + d[:, 3]], axis=-1)
            k = (out(idx + 2 * fmc)[pos] * stride).reshape(len(pos), -1, 2) + centres[:, None, :]
            scores_l.append(scores[pos])
            boxes_l.append(boxes)
            kps_l.append(k)
        if not scores_l:
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
        scores = np.vstack(scores_l)
        order = np.argsort(-scores.ravel(), kind="stable")
        pre = np.hstack((np.vstack(boxes_l) / det_scale, scores)).astype(np.float32, copy=False)[order]
        kps = (np.vstack(kps_l) / det_scale)[order]
        keep = net.nms(pre)
        return pre[keep], kps[keep]


class YuNetDetector(Detector):
    """YuNet (libfacedetection, MIT) through ``cv2.FaceDetectorYN``."""

    name = "yunet"

    def __init__(self, model_path: Path, **kw) -> None:
        import cv2

        super().__init__(**kw)
        self._path = str(model_path)
        try:
            self._net = cv2.FaceDetectorYN.create(self._path, "", (320, 320), self.threshold, 0.3, 5000)
        except cv2.error as e:
            raise ModelError(f"OpenCV could not load YuNet from {model_path}: {e}", code="MODEL_LOAD_FAILED",
                             file=str(model_path)) from e

    def _detect_at(self, image: np.ndarray, size: int, threshold: float | None = None) -> Detections:
        import cv2

        h, w = image.shape[:2]
        scale = size / float(max(h, w))
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._net.setInputSize((nw, nh))
        _, faces = self._net.detect(resized)
        if faces is None or len(faces) == 0:
            return Detections.empty()
        faces = faces[faces[:, 14] >= self.threshold]
        if len(faces) == 0:
            return Detections.empty()
        boxes = np.stack([faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2], faces[:, 1] + faces[:, 3]], 1)
        kps = faces[:, 4:14].reshape(-1, 5, 2)
        # YuNet lists right eye, left eye, nose, right mouth, left mouth (the subject's right/left);
        # InsightFace order puts the smaller-x point of each pair first.
        kps = kps[:, [1, 0, 2, 4, 3], :]
        swap_eyes = kps[:, 0, 0] > kps[:, 1, 0]
        kps[swap_eyes] = kps[swap_eyes][:, [1, 0, 2, 4, 3], :]
        return Detections((boxes / scale).astype(np.float32), faces[:, 14].astype(np.float32),
                          (kps / scale).astype(np.float32))


# ------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class DetectorEntry:
    """One detector choice: its class and the model file it runs."""

    cls: type
    #: manifest name (smile2pay.models.manifest.MODELS) of the model it runs; None: the model pack's
    #: detector (``Pack.detector``: det_500m in pack mobile, det_10g in buffalo_l)
    model: str | None
    #: True: it runs on an onnxruntime session made by smile2pay.models.runtime; False: it loads the file itself
    uses_session: bool
    summary: str

    @property
    def name(self) -> str:
        return self.cls.name

    def model_name(self, pack) -> str:
        """The manifest name of the model this detector runs with ``pack``."""
        return self.model or pack.detector

    def create(self, model_path: Path, session=None, **kw) -> Detector:
        return self.cls(model_path, session, **kw) if self.uses_session else self.cls(model_path, **kw)


#: every detector choice, by name (the name is the class's ``name``); the first is the default
DETECTORS: dict[str, DetectorEntry] = {e.name: e for e in (
    DetectorEntry(SCRFDDetector, model=None, uses_session=True,
                  summary="SCRFD, the model pack's detector (InsightFace weights: non-commercial)"),
    DetectorEntry(YuNetDetector, model="yunet", uses_session=False, summary="YuNet (MIT licence)"),
)}
DEFAULT_DETECTOR: str = next(iter(DETECTORS))


def get_detector(name: str) -> DetectorEntry:
    """The registry entry for ``name`` (ConfigError CONFIG_INVALID for an unknown one)."""
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {name!r}",
                          code="CONFIG_INVALID", setting="detector") from None
