"""The face pipeline: decode -> detect -> align -> quality -> identity embedding (-> AU).

Model loading (``FacePipeline.__init__``) is separate from inference; every session is
created through :mod:`smile2pay.models.runtime`. Each stage is a plain method on plain
data so a benchmark can time it alone.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np

from .config import Settings
from .errors import FaceError, ModelError
from .imageio import ImageInput, load_image
from .models.manifest import get_pack, get_spec
from .models.runtime import ProviderReport, create_session
from .models.store import ModelStore
from .reasons import MULTIPLE_FACES, NO_FACE
from .types import Face
from .vision import quality as quality_mod
from .vision.align import norm_crop
from .vision.detect import Detections, Detector, get_detector
from .vision.identity import IdentityEmbedder

log = logging.getLogger(__name__)

PICKS = ("error", "largest", "center", "best")


class FacePipeline:
    """Loads the models of one pack once; ``analyze`` runs them on an image."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        s = self.settings
        self.store = ModelStore(s.model_dir_candidates(), verify=s.verify_checksums)
        self.pack = get_pack(s.pack_name())
        self.providers: dict[str, ProviderReport] = {}
        det_kw = dict(det_sizes=s.det_sizes, threshold=s.det_threshold, pad_retry=s.pad_retry)
        entry = get_detector(s.detector)
        det_model = entry.model_name(self.pack)
        if entry.uses_session:
            path, sess = self._session(det_model)
        else:                                   # the detector reads its file itself
            path, sess = self.store.path(det_model), None
        self.detector: Detector = entry.create(path, sess, **det_kw)
        rec = get_spec(self.pack.recognizer)
        self.recognizer_spec = rec
        self.au_analyzer = self._load_au()
        #: the identity network's smile probe (smile2pay.vision.smile_probe), read on every embedded face; None
        #: when the pack has none, the setting is off, or the AU stage is not the one its thresholds belong to
        self.smile_probe = self._load_smile_probe()
        feats = self.smile_probe.recognizer_tensors if self.smile_probe is not None else ()
        self.embedder = IdentityEmbedder(rec, self._session(rec.name, extra_outputs=feats)[1], feature_outputs=feats)

    def _session(self, name: str, extra_outputs: tuple[str, ...] = ()):
        """(path, session) of a manifest model: its bytes read once, sha256-checked, and loaded from those bytes
        (``extra_outputs``: inner tensors the session returns too, after the model's own outputs)."""
        path, data = self.store.read(name)
        if extra_outputs:
            from .models.graph import add_outputs

            try:
                data = add_outputs(data, extra_outputs)
            except ValueError as e:
                raise ModelError(f"{name}: {e} (the smile probe reads {list(extra_outputs)})",
                                 code="MODEL_LOAD_FAILED", model=name) from e
        sess, report = create_session(data, threads=self.settings.threads, providers=self.settings.providers,
                                      name=name, rewrite=self.settings.graph_rewrite)
        self.providers[name] = report
        return path, sess

    def _load_au(self):
        """AU stage (smile2pay.vision.au): backend "model" (the pack's AU network; skipped when the
        pack has none), "blendshapes" (MediaPipe teacher) or "both"."""
        from .vision.au import AUAnalyzer, AUModel, BlendshapeTeacher

        s = self.settings
        backend = getattr(s, "au_backend", "model")
        model = teacher = None
        if backend in ("model", "both") and self.pack.au:
            spec = get_spec(self.pack.au)
            model = AUModel(spec, self._session(spec.name)[1])
        if backend in ("blendshapes", "both"):
            teacher = BlendshapeTeacher(self._session("mp_face_landmarks")[1],
                                        self._session("mp_blendshapes")[1])
        if model is None and teacher is None:
            return None
        if backend == "both" and model is None:
            backend = "blendshapes"
        fer = None
        if model is not None and getattr(s, "au_fusion", True) and self.pack.expression:
            from .vision.fer import FERClassifier

            name = self.pack.expression
            fer = FERClassifier(self._session(name)[1])
        return AUAnalyzer(backend, model, teacher, crop_size=s.au_crop_size, pad=s.au_pad, fer=fer)

    def _load_smile_probe(self):
        """The pack's smile probe, when it applies: the pack names one made for its recogniser, the setting is on,
        and the AU stage is the AU network fused with the expression classifier (the probe's thresholds are
        calibrated on those scores)."""
        s = self.settings
        name = getattr(self.pack, "smile_probe", None)
        a = self.au_analyzer
        if not name or not getattr(s, "smile_probe", True) or a is None or a.backend != "model" or a.fer is None:
            return None
        from .vision.smile_probe import SmileProbe

        probe = SmileProbe(self.store.read(name)[1], name=name)
        if probe.recognizer != self.recognizer_spec.name:
            raise ModelError(f"{name} reads {probe.recognizer}'s features, the pack's recogniser is "
                             f"{self.recognizer_spec.name}", code="MODEL_LOAD_FAILED", model=name)
        if probe.tail_sha256 is not None:
            tail = getattr(self.pack, "smile_tail", None)
            if not tail:
                raise ModelError(f"{name} reads a smile tail the pack does not name", code="MODEL_LOAD_FAILED",
                                 model=name)
            probe.attach_tail(self._session(tail)[1], get_spec(tail).sha256 or "")
        return probe

    def au(self, faces: list[Face]) -> None:
        """Fill ``au_probs`` (and, with the AU model, ``au_embedding``) of each face."""
        if faces and self.au_analyzer is not None:
            self.au_analyzer.analyze(faces)

    @property
    def model_fingerprint(self) -> str:
        """Identifies the embedding space: recogniser name + sha256 (galleries store this)."""
        return f"{self.recognizer_spec.name}:{self.store.check(self.recognizer_spec.name).actual_sha256}"

    # -- stages ---------------------------------------------------------------------------------
    def load(self, image: ImageInput) -> np.ndarray:
        s = self.settings
        return load_image(image, max_pixels=s.max_image_pixels, max_bytes=s.max_file_bytes,
                          min_side=s.min_image_side)

    def detect(self, img: np.ndarray) -> Detections:
        return self.detector.detect(img)

    def faces(self, img: np.ndarray, dets: Detections) -> list[Face]:
        """Align and assess every detection (no embedding yet)."""
        h, w = img.shape[:2]
        out = []
        for i in range(len(dets)):
            lm = dets.landmarks[i]
            crop = norm_crop(img, lm, size=self.embedder.size, pad=0.0)
            q = quality_mod.assess(float(dets.scores[i]), lm, crop, self.settings.quality)
            f = Face(bbox=dets.boxes[i].copy(), det_score=float(dets.scores[i]), landmarks=lm.copy(),
                     quality=q, image_size=(w, h), detector_pass=dets.attempt, image=img)
            f.identity_crop = crop  # reused by embed()
            out.append(f)
        return out

    def embed(self, faces: list[Face]) -> None:
        if not faces:
            return
        crops = [f.identity_crop for f in faces]
        crops = [c if c is not None else f.crop("identity", self.embedder.size) for c, f in zip(crops, faces)]
        embs, tensors = self.embedder.embed_with_features(crops, flip=self.settings.flip_tta,
                                                          features=self.smile_probe is not None)
        z = self.smile_probe.logits(tensors) if tensors else [None] * len(faces)
        for f, e, zi in zip(faces, embs, z):
            f.embedding = e
            f.smile_probe = None if zi is None else float(zi)

    # -- whole pipeline -------------------------------------------------------------------------
    def analyze(self, image: ImageInput, *, embed: bool = True, au: bool = True) -> list[Face]:
        """All faces in the image, largest first, each with quality (and embedding, AU probabilities)."""
        img = self.load(image)
        faces = self.faces(img, self.detect(img))
        faces.sort(key=lambda f: -f.area)
        if embed:
            self.embed(faces)
        if au:
            self.au(faces)
        return faces

    def single(self, image: ImageInput, *, pick: str = "error", embed: bool = True, au: bool = True) -> Face:
        """Exactly one face. ``pick``: 'error' (MULTIPLE_FACES if several), 'largest', 'center'
        (nearest the image centre: LFW's protocol face), 'best' (highest detection score)."""
        if pick not in PICKS:
            raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
        img = self.load(image)
        faces = self.faces(img, self.detect(img))
        if not faces:
            raise FaceError("no face found in the image", code=NO_FACE)
        if len(faces) > 1:
            if pick == "error":
                raise FaceError(f"{len(faces)} faces in the image; exactly one is required",
                                code=MULTIPLE_FACES, faces=len(faces))
            faces = [pick_face(faces, pick, img.shape)]
        if embed:
            self.embed(faces)
        if au:
            self.au(faces)
        return faces[0]

    def window_for(self, img: np.ndarray, face: Face):
        """The detection window (smile2pay.vision.track.Window) a burst uses after ``face`` was found in
        ``img``; None when windows are off (``Settings.window_face_px == 0``) or the box is degenerate."""
        from .vision import track

        px = self.settings.window_face_px
        if not px:
            return None
        return track.window_around(face.bbox, img.shape, px, max_size=max(self.settings.det_sizes))

    def first_look(self, img: np.ndarray):
        """A burst's cheap first look at its first frame: ``(face, window)`` or None.

        The whole frame is detected at ``Settings.burst_first_look`` (128: ~1 ms on one core, against ~5 ms
        for the ladder's 320). The look decides only when it finds exactly one candidate scoring at least
        ``FAINT_FACE_SCORE`` (0.2; a face cut by the frame's edge scores that low at a small input), that one
        above the detector's threshold and at least ``SEEN_FACE_PX / NEAR_FACE_RATIO`` detector pixels (64)
        tall, so that another whole face half as tall would have been seen too; a single face found smaller
        gets one second look at the size that makes it that tall, if that size is at most twice the first and
        below the ladder's first. ``window`` is the look as a :class:`~smile2pay.vision.track.Window` (the whole
        frame at the look's size): a burst whose detection window is that same window reuses the face instead
        of detecting the frame twice (the look's one candidate is exactly what the window detection finds). None
        (no face, another candidate, a face too small to decide, a detector that cannot count faint
        candidates): the caller runs the ladder, which sees smaller faces. No embedding, no AU."""
        from .vision import track

        s = self.settings
        size = int(s.burst_first_look)
        if not size or not s.window_face_px or not getattr(self.detector, "lower_threshold_ok", False):
            return None
        h, w = img.shape[:2]
        need = track.SEEN_FACE_PX / track.NEAR_FACE_RATIO
        faint = min(track.FAINT_FACE_SCORE, s.det_threshold)
        for _ in range(2):
            window = track.Window(0, 0, w, h, size, (h, w))
            dets = self.detector.detect_window(img, window, threshold=faint)
            if len(dets) != 1 or float(dets.scores[0]) < s.det_threshold:
                return None     # another candidate, however faint, or no sure face: the ladder decides
            tall = float(dets.boxes[0, 3] - dets.boxes[0, 1]) * size / float(max(h, w))
            if tall >= need:
                return self.faces(img, dets)[0], window
            nxt = int(math.ceil(size * need / max(tall, 1.0) / 32.0) * 32)
            if nxt > 2 * size or nxt >= min(s.det_sizes):     # no cheaper than the ladder
                return None
            size = nxt
        return None

    def single_in_window(self, img: np.ndarray, window, anchor: Face, *, au: bool = True) -> Face | None:
        """The one face inside ``window`` that is still the face ``anchor`` (box IoU >= track.LINK_IOU) and
        lies wholly inside the window; None otherwise (a frame of another size, no face, two faces, moved,
        cut by the window's edge): the caller then detects on the whole frame, as :meth:`single` does.
        No embedding."""
        from .vision import track

        if not window.fits(img.shape):
            return None
        dets = self.detector.detect_window(img, window)
        if len(dets) != 1 or not window.contains(dets.boxes[0], img.shape) \
                or track.box_iou(dets.boxes[0], anchor.bbox) < track.LINK_IOU:
            return None
        faces = self.faces(img, dets)
        if au:
            self.au(faces)
        return faces[0]

    def embed_images(self, images: Iterable[ImageInput], pick: str = "center") -> list[Face | None]:
        """Convenience for benchmarks: one face per image, None where no face was found."""
        out: list[Face | None] = []
        for im in images:
            try:
                out.append(self.single(im, pick=pick))
            except FaceError:
                out.append(None)
        return out


def pick_face(faces: list[Face], how: str, shape) -> Face:
    """One of several faces: ``largest`` (box area), ``best`` (detector score), else the one nearest the
    middle of an image of ``shape``."""
    if how == "largest":
        return max(faces, key=lambda f: f.area)
    if how == "best":
        return max(faces, key=lambda f: f.det_score)
    cy, cx = shape[0] / 2.0, shape[1] / 2.0

    def dist(f: Face) -> float:
        bx, by = (f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0
        return (bx - cx) ** 2 + (by - cy) ** 2

    return min(faces, key=dist)


