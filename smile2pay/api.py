"""``Smile2Pay``: the public facade. One FacePipeline (images -> Faces) and one Gallery (embeddings).

    from smile2pay import Smile2Pay
    s2p = Smile2Pay(gallery="path/to/gallery", models=None)   # models: folder or pack name
    s2p.enroll("alice", ["neutral.jpg"], kind="neutral")
    s2p.identify(image, k=5); s2p.verify_identity("alice", image_or_face)
    s2p.get("alice"); s2p.remove("alice"); s2p.compact()

A payment is one :class:`smile2pay.attempt.PaymentAttempt` (``begin`` -> observe frames -> ``finish``):
``verify()`` (a burst) and ``start_session()`` (a stream) both run on it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Sequence

import numpy as np

from .attempt import PaymentAttempt, check_nonce, check_request_id
from .config import GallerySettings, Settings
from .decision import engine
from .decision import population as population_mod
from .decision.lockout import GuardSettings
from .decision.policy import DEFAULT_FAR, Policy
from .decision.rules import parse_rule
from .errors import ConfigError, FaceError, RequestError, Smile2PayError
from .gallery import EnrollResult, Gallery, IdentityResult, Match, UserRecord, open_gallery, open_guard
from .reasons import LOW_QUALITY, NOT_NEUTRAL
from .types import Decision, Face

MAX_FRAMES = 30
#: the largest offset / limit ``Smile2Pay.list`` takes (a signed 64-bit integer)
MAX_LIST_INDEX = 2**63 - 1

log = logging.getLogger(__name__)


def pad_frames(mode: str, n: int, embedded: list[int], smile: int | None) -> list[int]:
    """The burst frames passive PAD scores: ``"enforce"``, every frame (each must prove a live face);
    ``"report"``, the frame the payment rests on: the smile frame, or without one the last embedded frame
    (one MiniFASNet pair, ~3 ms, instead of one per decision frame: the score is reported, not acted on);
    ``"off"``, none."""
    if mode == "enforce":
        return list(range(n))
    if mode == "report":
        if smile is not None:
            return [smile]
        return [max(embedded)] if embedded else []
    return []


#: one image (as opposed to a list of them): what ``enroll`` and ``verify`` wrap in a list
_ONE_IMAGE = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray, Face)


def _image_list(images, what: str) -> list:
    """``images`` (one image, or an iterable of them) as a list; anything else is a ``RequestError``."""
    if isinstance(images, _ONE_IMAGE):
        return [images]
    try:
        return list(images)
    except TypeError:   # None, a number, an object that is neither an image nor a list of them
        raise RequestError(f"{what} must be an image (path, bytes or BGR array) or a list of them, "
                           f"got {type(images).__name__}", code="REQUEST_INVALID") from None


class Smile2Pay:
    """Face pipeline + gallery.

    Args:
        gallery: gallery folder (created unless ``create=False``), ``sqlite:///path``, or ``postgresql://...``
            (the shared gallery of a fleet of servers, see :mod:`smile2pay.gallery.postgres`).
        models: model folder or pack name (default: SMILE2PAY_MODELS, then ~/.smile2pay/models).
        settings / gallery_settings: full settings objects (default: from the environment).
        key: gallery key (default: SMILE2PAY_GALLERY_KEY / SMILE2PAY_GALLERY_KEY_FILE; else a folder gallery
            uses the key file beside it, generated on creation). ``plaintext=True`` stores templates
            unencrypted (only by name; logged as a warning).
        identity_threshold: pin the cosine for "same person" (default: none; the threshold comes from
            the calibration file, adjusted to the gallery's own population, see below).
        pipeline: an already-loaded FacePipeline to share (its fingerprint must match the gallery's).
        policy: calibration file (``smile2pay calibrate``) or a :class:`Policy`; default: the file
            shipped for the mobile pack. ``far``: the operating point taken from it (default 1e-4).
        guard_settings: lockout settings; ``allow_single_frame``: permit ``liveness="none"``.
        pad: passive presentation-attack detection: "enforce" (decline PRESENTATION_ATTACK below the
            calibrated threshold), "report" (score every decision, decline nothing: the calibration
            file's default, see docs/security.md) or "off".
        self_calibrate: adjust the identity threshold to the gallery's own population (default on;
            :mod:`smile2pay.decision.population`). One threshold serves the duplicate check at
            enrolment, ``identify``, ``verify_identity``, ``verify`` and stream sessions:
            :meth:`identity_operating_point` says which and why.
    """

    def __init__(self, gallery: str | os.PathLike, models: str | None = None, *,
                 settings: Settings | None = None, gallery_settings: GallerySettings | None = None,
                 key: bytes | None = None, identity_threshold: float | None = None, index: str | None = None,
                 plaintext: bool | None = None, create: bool = True, pipeline=None,
                 policy: str | os.PathLike | Policy | None = None, far: float = DEFAULT_FAR,
                 guard_settings: GuardSettings | None = None, allow_single_frame: bool = False,
                 self_calibrate: bool = True, pad: str | None = None) -> None:
        from .pipeline import FacePipeline

        self.settings = settings or Settings.from_env(models=models)
        self.gallery_settings = gallery_settings or GallerySettings.from_env(
            key=key, identity_threshold=identity_threshold, index=index, plaintext=plaintext)
        self.pipeline = pipeline or FacePipeline(self.settings)
        gs = self.gallery_settings
        # a folder / sqlite:///path (embedded) or postgresql://... (shared by a fleet; docs/deployment.md)
        self.gallery = open_gallery(gallery, fingerprint=self.pipeline.model_fingerprint,
                                    dim=getattr(self.pipeline.embedder, "dim", None) or 512,
                                    key=gs.key, identity_threshold=gs.identity_threshold, index=gs.index,
                                    plaintext=gs.plaintext, create=create)
        self.guard = open_guard(self.gallery, guard_settings or GuardSettings())
        self.policy = self._load_policy(policy, far)
        if pad is not None:
            if pad not in ("enforce", "report", "off"):
                raise RequestError("pad must be 'enforce', 'report' or 'off'", code="REQUEST_INVALID")
            from dataclasses import replace as _replace

            self.policy = _replace(self.policy, pad_mode=pad)
        self._pad = None
        self._pad_lock = threading.Lock()
        self.allow_single_frame = bool(allow_single_frame)
        self.self_calibrate = bool(self_calibrate)
        self._op: population_mod.PopulationEstimate | None = None
        self._op_lock = threading.Lock()

    def _load_policy(self, policy, far: float) -> Policy:
        if not isinstance(policy, Policy):
            policy = Policy.from_calibration(policy, far=far, model_fingerprint=self.pipeline.model_fingerprint)
        probe = getattr(self.pipeline, "smile_probe", None)
        want = (policy.probe_calibration or {}).get("model")
        if probe is not None and want and want != f"smile_probe:{probe.sha256}":
            raise ConfigError(f"the calibration's smile-probe operating point was made for {want}, the pack reads "
                              f"smile_probe:{probe.sha256}: its thresholds mean nothing for another probe",
                              code="CALIBRATION_MODEL_MISMATCH")
        return policy

    # -- the one identity threshold ---------------------------------------------------------------
    def identity_operating_point(self, refresh: bool = False) -> population_mod.PopulationEstimate:
        """The identity threshold in use and where it comes from: pinned by ``identity_threshold`` /
        SMILE2PAY_IDENTITY_THRESHOLD (``configured``), else the calibration file's threshold at the
        policy's FAR adjusted to this gallery's population (``shipped`` or ``self-calibrated``).
        Re-estimated when the number of enrolled users has changed by 10% (or by one, below ten)."""
        pinned = self.gallery_settings.identity_threshold
        far = float(self.policy.identity_far or population_mod.DEFAULT_FAR)
        if pinned is not None:
            return population_mod.PopulationEstimate(
                far=far, users=-1, users_used=0, pairs=0, shipped=self.policy.identity_threshold,
                floor=self.policy.identity_threshold, z=0.0, threshold=float(pinned), source="configured",
                note="pinned by identity_threshold / SMILE2PAY_IDENTITY_THRESHOLD; self-calibration off")
        if not self.self_calibrate:
            return population_mod.PopulationEstimate(
                far=far, users=-1, users_used=0, pairs=0, shipped=self.policy.identity_threshold,
                floor=self.policy.identity_threshold, z=0.0, threshold=self.policy.identity_threshold,
                source="shipped", note="self-calibration off")
        with self._op_lock:
            op = self._op
            try:
                n = self.gallery.count()
            except Smile2PayError:      # database unreachable: keep the last estimate if there is one
                if op is None:
                    raise
                return op
            if refresh or op is None or abs(n - op.users) >= max(1, 0.1 * op.users):
                op = self._op = population_mod.for_gallery(self.gallery, self.policy)
                log.info("identity threshold %.4f (%s) for %d users", op.threshold, op.source, op.users)
            return op

    @property
    def identity_threshold(self) -> float:
        """The cosine at or above which a face is the claimed / found user, for every identity check."""
        return self.identity_operating_point().threshold

    def pad_score(self, image: np.ndarray, face: Face) -> float | None:
        """Passive PAD p_real of one face in its frame, or None (PAD off, models absent in report mode, or a
        face smaller than the models can judge)."""
        if self.policy.pad_mode == "off":
            return None
        if min(face.width, face.height) < self.policy.pad_min_face_px:
            return None
        with self._pad_lock:
            if self._pad is None:
                from .errors import ModelError
                from .vision.pad import PresentationAttackDetector

                try:
                    self._pad = PresentationAttackDetector.from_pipeline(self.pipeline,
                                                                         threshold=self.policy.pad_threshold)
                except ModelError:
                    if self.policy.pad_mode == "enforce":
                        raise
                    log.warning("PAD models not found: decisions are not scored for presentation attacks")
                    self._pad = False
        return None if self._pad is False else float(self._pad.score(image, face.bbox))

    def payment_policy(self) -> Policy:
        """The decision policy with the identity threshold in use (what ``verify`` and sessions judge by)."""
        from dataclasses import replace

        op = self.identity_operating_point()
        return replace(self.policy, identity_threshold=op.threshold,
                       identity_population=population_mod.summary(op))

    # -- images -> faces -----------------------------------------------------------------------
    def face(self, image_or_face, *, pick: str = "error") -> Face:
        """One embedded face from a path / bytes / BGR array, or a ``Face`` passed through."""
        if isinstance(image_or_face, Face):
            if image_or_face.embedding is None:
                self.pipeline.embed([image_or_face])
            return image_or_face
        from .pipeline import PICKS

        if not isinstance(pick, str) or pick not in PICKS:
            raise RequestError(f"pick must be one of {PICKS}, got {pick!r}", code="REQUEST_INVALID")
        return self.pipeline.single(image_or_face, pick=pick)

    # -- enrolment -----------------------------------------------------------------------------
    def enroll(self, user_id: str, images: Sequence[Any] | Any, kind: str | Sequence[str] = "neutral", *,
               mode: str = "new", pick: str = "error", check_duplicates: bool = True,
               require_quality: bool = True) -> EnrollResult:
        """Enrol ``user_id`` from images (paths, bytes, BGR arrays or Faces).

        Images with no usable face or failing the quality gates are rejected with reasons
        (``EnrollResult.rejected``); the others are enrolled. If none passes, ``FaceError``
        (``LOW_QUALITY``, or ``NO_FACE``/``MULTIPLE_FACES`` for a single image) is raised with the
        per-image reasons. A face matching another user raises ``DuplicateIdentityError``.
        ``mode``: ``new`` | ``append`` | ``replace`` (see :meth:`Gallery.enroll`).
        """
        images = _image_list(images, "images")
        if not images:
            raise RequestError("enroll needs at least one image", code="REQUEST_INVALID")
        try:
            kinds = [kind] * len(images) if isinstance(kind, str) else list(kind)
        except TypeError:   # None, a number
            kinds = []
        if len(kinds) != len(images):
            raise RequestError("kind must be one string or one per image", code="REQUEST_INVALID")
        self.gallery.check_user_id(user_id)
        from .gallery.batch import baseline_probs, neutral_baseline

        embs, ok_kinds, rejected, neutral_au = [], [], [], []
        last_err: Smile2PayError | None = None
        for i, (im, kd) in enumerate(zip(images, kinds)):
            label = str(im) if isinstance(im, (str, os.PathLike)) else f"#{i}"
            try:
                f = self.face(im, pick=pick)
            except FaceError as e:
                rejected.append({"image": label, "code": e.code, "reasons": [e.code]})
                last_err = e
                continue
            if require_quality and not f.quality.passed:
                rejected.append({"image": label, "code": LOW_QUALITY, "reasons": list(f.quality.reasons)})
                continue
            if kd == "neutral" and self.shows_smile(f.au_probs):
                # a smiling "neutral" template would become the baseline and block every payment
                rejected.append({"image": label, "code": NOT_NEUTRAL, "reasons": [NOT_NEUTRAL]})
                continue
            embs.append(f.embedding)
            ok_kinds.append(kd)
            if kd == "neutral" and f.au_probs:
                neutral_au.append((baseline_probs(f), f.au_embedding))
        if not embs:
            code = last_err.code if (len(images) == 1 and last_err is not None) else LOW_QUALITY
            if len(images) == 1 and rejected and rejected[0]["code"] == NOT_NEUTRAL:
                code = NOT_NEUTRAL
            raise FaceError(f"no usable face in the {len(images)} image(s) given for enrolment", code=code,
                            user_id=user_id, rejected=rejected)

        # the personal AU baseline (mean of the neutral faces), written in the same transaction as the templates
        baseline = neutral_baseline(neutral_au)
        res = self.gallery.enroll(user_id, np.stack(embs), ok_kinds, mode=mode, check_duplicates=check_duplicates,
                                  threshold=self.identity_threshold if check_duplicates else None, baseline=baseline)
        res.rejected = rejected
        return res

    def shows_smile(self, au_probs: dict | None) -> bool:
        """The smile pattern in one face, at the payment's (burst) AU thresholds: a "neutral" enrolment photo that
        passes them would become a baseline no smile can rise above (``NOT_NEUTRAL``). The single-frame thresholds
        are lower (one frame without a neutral reference) and would refuse slight smiles that still enrol well."""
        if not au_probs:
            return False
        thr = self.policy.au_thresholds
        return all(float(au_probs.get(a, 0.0)) >= float(thr.get(a, self.policy.default_au_threshold))
                   for a in ("AU6", "AU12"))

    # -- queries -------------------------------------------------------------------------------
    def identify(self, image_or_face, k: int = 5, *, threshold: float | None = None,
                 pick: str = "error") -> list[Match]:
        """1:N open-set identification: top-k users; ``Match.match`` marks scores >= threshold."""
        thr = self.identity_threshold if threshold is None else threshold
        return self.gallery.identify(self.face(image_or_face, pick=pick).embedding, k, threshold=thr)

    def verify_identity(self, user_id: str, image_or_face, *, threshold: float | None = None,
                        pick: str = "error") -> IdentityResult:
        """1:1: does this face belong to the claimed ``user_id``?"""
        thr = self.identity_threshold if threshold is None else threshold
        return self.gallery.verify_identity(user_id, self.face(image_or_face, pick=pick).embedding, threshold=thr)

    # -- the payment decision ------------------------------------------------------------------
    def verify(self, user_id: str, frames: Sequence[Any], require: str = "AU6+AU12", liveness: str = "burst",
               nonce: str | None = None, request_id: str | None = None) -> Decision:
        """Approve a payment: every frame is ``user_id`` (at the policy's calibrated threshold), the AU
        ``require`` pattern appears as a change (absent, then present; above the user's neutral
        baseline), the frames are not one still repeated, the user is not locked out, and ``nonce``
        (if given) was never used. Bad requests raise typed errors; every decision is audited."""
        t0 = time.perf_counter()
        rule = parse_rule(require)
        self._check_liveness(liveness)
        frames = _image_list(frames, "frames")
        if not frames or len(frames) > MAX_FRAMES:
            raise RequestError(f"verify needs 1 to {MAX_FRAMES} frames, got {len(frames)}", code="REQUEST_INVALID")
        check_nonce(nonce)
        check_request_id(request_id)
        self.gallery.check_user_id(user_id)
        images = [self.pipeline.load(fr) for fr in frames]   # bad input is a typed error, whoever claims
        with self.begin(user_id, rule, nonce=nonce, request_id=request_id, liveness=liveness,
                        started=t0) as attempt:
            if attempt.early is not None:
                return attempt.finish(attempt.early, False, len(frames))
            return attempt.finish(self._burst_decision(attempt, images), True, len(frames))

    def _burst_decision(self, attempt: PaymentAttempt, images: list[np.ndarray]) -> Decision:
        """verify()'s per-frame work and decision (the attempt has begun and nothing decided it early)."""
        obs: list[engine.FrameObs] = []
        faces: list[Face | None] = []
        t_frames = time.perf_counter()
        # detect + align + quality + AU on every frame; the identity embedding (the costly stage) only
        # where it decides, see _identity_where_it_decides
        for f in self._burst_faces(images):
            if isinstance(f, FaceError):
                obs.append(engine.FrameObs(error=f.code))
                faces.append(None)
                continue
            faces.append(f)
            obs.append(attempt.observe(f))             # not embedded yet: identity_score None
        embedded, smile = self._identity_where_it_decides(faces, obs, attempt)
        policy = attempt.policy
        probe_policy = self.smile_probe_policy(attempt.policy, attempt.baseline, attempt.rule)
        if probe_policy is not None:
            embedded, smile = self._judge_with_probe(faces, obs, attempt, probe_policy, embedded)
            policy = probe_policy
        # passive PAD (~3 ms a face): enforced, on every frame; reported, on the frame the payment rests on
        # (the smile frame; without one, the last embedded frame), as a stream does: see pad_frames
        for i in pad_frames(policy.pad_mode, len(faces), embedded, smile):
            if faces[i] is not None:
                obs[i].pad_score = self.pad_score(images[i], faces[i])
        t_pipe = time.perf_counter() - t_frames
        out = engine.decide(obs, attempt.rule, policy, liveness=attempt.liveness, baseline=attempt.baseline)
        return attempt.decision(out, timings_ms={"pipeline": round(t_pipe * 1000.0, 2),
                                                 "per_frame": round(t_pipe * 1000.0 / len(images), 2)})

    def _burst_faces(self, images: list[np.ndarray]) -> list[Face | FaceError]:
        """One face per burst frame, with quality and AU probabilities (no embedding), or the FaceError
        of a frame without exactly one face.

        The first frame is detected on the whole frame: first a cheap look at one small scale
        (``FacePipeline.first_look``, ``Settings.burst_first_look``), which decides when it finds one face tall
        enough that a face half its height would be seen too; else the ladder (more than one face is
        MULTIPLE_FACES). Then, unless ``Settings.window_face_px`` is 0, every frame, the first included, is
        detected inside one window around that face at one small scale (``FacePipeline.single_in_window``:
        ~1.5 ms instead of ~5 ms a frame on one core; a first frame whose window is the look itself is not
        detected again); a frame whose face is not found there, has moved off the first frame's box or is cut
        by the window's edge is detected on the whole frame instead. A second face that enters the frame
        outside the window after the first frame is not looked for, nor is one smaller than half the user's
        face when the first look decided."""
        pipe = self.pipeline
        out: list[Face | FaceError] = []
        window = anchor = None
        for k, img in enumerate(images):
            f = pipe.single_in_window(img, window, anchor, au=False) if window is not None else None
            if f is None:
                look = pipe.first_look(img) if k == 0 else None
                if look is not None:
                    f, look = look
                else:
                    try:
                        f = pipe.single(img, pick="error", embed=False, au=False)
                    except FaceError as e:
                        out.append(e)
                        continue
                if k == 0:
                    window = pipe.window_for(img, f)
                    if window is not None and window == look:
                        redo = f               # the look was this window's detection: not run twice
                    else:
                        redo = pipe.single_in_window(img, window, f, au=False) if window is not None else None
                    if redo is None:
                        window = None      # no usable window: every frame on the whole frame
                    else:
                        anchor, f = f, redo
            out.append(f)
        got = [f for f in out if not isinstance(f, FaceError)]
        if got:
            pipe.au(got)                      # one batched AU forward for the burst
        return out

    #: "decision": embed the neutral and the smile frame a burst decision uses, every other frame covered by
    #: box-IoU tracking from them (smile2pay.vision.track); "all": embed every frame (the reference path);
    #: "smile" (measured, not the default: one identity check fewer): the smile frame alone, the rest tracked
    identity_frames = "decision"

    def _identity_where_it_decides(self, faces, obs, attempt: PaymentAttempt) -> tuple[list[int], int | None]:
        """Fill ``identity_score`` of every frame with a face (part of verify()'s per-frame work); returns
        the indices of the frames that were embedded and the smile frame's index (None: no neutral frame
        followed by a smile frame, or a burst that takes the reference path).

        With ``identity_frames == "decision"`` and a burst whose AU judgement finds a neutral frame and a
        later smile frame (the two frames liveness and the decision use), only those two are embedded (one
        batched forward); a frame linked to them by consecutive box IoU >= ``track.LINK_IOU`` carries the
        lower of their scores; a frame in a chain without either is embedded itself. Any other burst
        (an error or a low-quality frame, no neutral or no smile frame: a decline whatever identity says,
        single-frame mode) embeds every frame, so its reasons are those of the reference path."""
        from .vision import track

        idx = [i for i, f in enumerate(faces) if f is not None]
        want = list(idx)
        onset = None
        if attempt.liveness == "burst" and len(idx) == len(faces) >= 2 and not any(o.quality_reasons for o in obs):
            present, absent, _ = engine.judge_frames([o.au_probs or None for o in obs], attempt.rule,
                                                     attempt.policy, attempt.baseline)
            neutral = next((i for i in range(len(faces)) if absent[i]), None)
            onset = None if neutral is None else next((j for j in range(neutral + 1, len(faces)) if present[j]),
                                                      None)
            if onset is not None and getattr(self, "identity_frames", "decision") in ("decision", "smile"):
                mode_anchors = {neutral, onset} if self.identity_frames != "smile" else {onset}
                want = track.frames_to_embed(faces, mode_anchors)
        if want:
            self.pipeline.embed([faces[i] for i in want])
        scores = {i: attempt.score(faces[i].embedding) for i in want}
        for o, s in zip(obs, track.carried_scores(faces, scores)):
            if s is not None:
                o.identity_score = s
        return want, onset

    def smile_probe_policy(self, policy: Policy, baseline: dict | None, rule=None) -> Policy | None:
        """The policy a burst's smile is judged by when the identity network's smile probe applies
        (``policy.with_smile_probe()``, the attempt's policy with its identity threshold): the pipeline reads a
        probe, the calibration has its operating point, the rule requires only AUs the probe is fused into (AU6,
        AU12; another rule is judged by the AU stage alone, as its thresholds were not chosen for the probe), and
        the user's baseline (if any) was enrolled with the probe (an older enrolment is judged as before, by the
        AU stage alone). None otherwise."""
        if self.pipeline.smile_probe is None or (baseline and "smile_probe" not in baseline):
            return None
        pp = policy.with_smile_probe()
        if pp is None or (rule is not None and not set(rule.required) <= set(pp.probe_aus)):
            return None
        return pp

    def _judge_with_probe(self, faces, obs, attempt: PaymentAttempt, policy: Policy, embedded: list[int]
                          ) -> tuple[list[int], int | None]:
        """The second judgement of a burst (smile probe): the frames already embedded carry the probe's logit; when
        they show no neutral -> smile change on the fused scores, every other frame with a face is embedded too
        (identity on its own score, as the reference path) and judged. Returns (embedded frames, the smile frame
        the fused judgement finds, or None)."""
        def onset_of() -> int | None:
            if attempt.liveness != "burst":
                return None
            base = engine.judged_baseline(attempt.baseline, policy)
            present, absent, _ = engine.judge_frames([engine.judged_probs(o, policy) for o in obs], attempt.rule,
                                                     policy, base)
            neutral = next((i for i in range(len(obs)) if absent[i]), None)
            return None if neutral is None else next((j for j in range(neutral + 1, len(obs)) if present[j]), None)

        for i in embedded:
            obs[i].smile_probe = faces[i].smile_probe
        onset = onset_of()
        done = set(embedded)
        rest = [i for i, f in enumerate(faces) if f is not None and i not in done]
        if (onset is None and rest and attempt.liveness == "burst"
                and not any(o.error or o.quality_reasons for o in obs)):   # (those decline whatever the smile)
            self.pipeline.embed([faces[i] for i in rest])
            for i in rest:
                obs[i].identity_score = attempt.score(faces[i].embedding)
                obs[i].smile_probe = faces[i].smile_probe
            embedded = sorted(done | set(rest))
            onset = onset_of()
        return embedded, onset

    # -- the payment attempt: one guard/audit path for verify() and stream sessions ----------------
    def _check_liveness(self, liveness: str, *, stream: bool = False) -> None:
        modes = engine.LIVENESS_MODES + (("stream",) if stream else ())
        if liveness not in modes:
            raise RequestError(f"liveness must be one of {modes}, got {liveness!r}", code="REQUEST_INVALID")
        if liveness == "none" and not self.allow_single_frame:
            raise RequestError("single-frame mode (liveness='none') is disabled; enable it with "
                               "Smile2Pay(..., allow_single_frame=True)", code="REQUEST_INVALID")

    def begin(self, user_id: str, require="AU6+AU12", *, nonce: str | None = None,
              request_id: str | None = None, liveness: str = "burst",
              started: float | None = None) -> PaymentAttempt:
        """Begin one payment attempt (:class:`smile2pay.attempt.PaymentAttempt`): take the payment policy,
        reserve the user's lockout slot, spend ``nonce``, load the templates and neutral AU baseline.
        ``attempt.early`` is a declined Decision when the lockout, the nonce or the enrolment decides
        (``LOCKED_OUT``, ``REPLAY``, ``NOT_ENROLLED``). ``require``: a rule string or a parsed Rule;
        ``liveness``: ``"burst"``, ``"none"`` (single frame, if allowed) or ``"stream"``; ``started``: the
        ``time.perf_counter()`` at which the request began (``timings_ms["total"]`` counts from it).
        Finish it with ``attempt.finish(decision, ...)``; use it as a context manager so that an exception
        releases the slot."""
        rule = parse_rule(require) if isinstance(require, str) else require
        self._check_liveness(liveness, stream=True)
        check_nonce(nonce)
        check_request_id(request_id)
        self.gallery.check_user_id(user_id)
        return PaymentAttempt(self, user_id, rule, liveness=liveness, nonce=nonce, request_id=request_id,
                              started=started)

    def start_session(self, user_id: str, require: str = "AU6+AU12", nonce: str | None = None,
                      request_id: str | None = None, **options):
        """A live stream session (:class:`smile2pay.stream.StreamSession`): push camera frames, get
        the state after each (WAITING_FOR_FACE, HOLD_NEUTRAL, SMILE_NOW, APPROVED, DECLINED) and the
        Decision once final. ``options``: :class:`smile2pay.stream.StreamSettings` fields."""
        from dataclasses import fields

        from .stream import StreamSession, StreamSettings

        known = {f.name for f in fields(StreamSettings)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RequestError(f"unknown stream option(s) {unknown}; known: {sorted(known)}", code="REQUEST_INVALID")
        return StreamSession(self, user_id, require=require, nonce=nonce, request_id=request_id,
                             settings=StreamSettings(**options))

    def unlock(self, user_id: str) -> dict:
        """Lift a lockout early (an operator's action, audited): clears the user's failure count."""
        self.gallery.check_user_id(user_id)
        was = self.guard.locked_until(user_id) is not None
        self.guard.reset(user_id)
        self.guard.audit({"event": "unlock", "user_id": user_id, "was_locked": was})
        return {"user_id": user_id, "was_locked": was}

    # -- storage pass-throughs -----------------------------------------------------------------
    def remove(self, user_id: str, *, compact: bool = True) -> int:
        """Erase a user: templates, AU baseline and lockout state, then (by default) compact so that no
        byte of them stays in a WAL or free page; the audit log keeps only ids and outcomes."""
        n = self.gallery.remove(user_id)
        self.guard.forget_user(user_id)
        if compact:
            self.gallery.compact()
        return n

    def get(self, user_id: str) -> UserRecord:
        return self.gallery.get(user_id)

    def list(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """The enrolled user ids, sorted: ``limit`` (None: all) of them from ``offset``."""
        for name, v in (("offset", offset), ("limit", limit)):
            if v is None and name == "limit":
                continue
            # integers a database can take (SQLite and PostgreSQL: signed 64-bit)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= MAX_LIST_INDEX:
                raise RequestError(f"{name} must be an integer in [0, {MAX_LIST_INDEX}], got {v!r}",
                                   code="REQUEST_INVALID")
        return self.gallery.list(int(offset), None if limit is None else int(limit))

    def count(self) -> int:
        return self.gallery.count()

    def compact(self) -> dict:
        return self.gallery.compact()

    def rotate_key(self, new_key: bytes | None) -> int:
        return self.gallery.rotate_key(new_key)

    def close(self) -> None:
        self.gallery.close()
        self.guard.close()

    def __enter__(self) -> "Smile2Pay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
