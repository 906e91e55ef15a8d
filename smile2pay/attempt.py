"""One payment attempt: begin -> observe frames -> finish. Every payment decision goes through here:
``Smile2Pay.verify`` (a burst), stream sessions (``smile2pay.stream``, the WebSocket route, ``watch``) and the
benchmarks that reproduce the product's decision.

    attempt = s2p.begin("alice", "AU6+AU12", nonce="order-42", liveness="burst")
    if attempt.early is not None:                  # locked out, nonce replayed or not enrolled
        return attempt.finish(attempt.early, count_failure=False, n_frames=0)
    obs = [attempt.observe(face) for face in faces]   # Face -> engine.FrameObs (identity scored if embedded)
    out = engine.decide(obs, attempt.rule, attempt.policy, baseline=attempt.baseline)
    return attempt.finish(attempt.decision(out), count_failure=True, n_frames=len(obs))

:meth:`Smile2Pay.begin` reserves the user's lockout slot (counted before the work, so concurrent attempts
cannot race past the lockout), spends the nonce, and loads the claimed user's templates and neutral AU
baseline; :meth:`PaymentAttempt.finish` records the outcome with the guard (or releases the slot) and writes
the audit record. An attempt left unfinished (an exception, a stream closed undecided) releases its slot on
:meth:`PaymentAttempt.abandon` or when its ``with`` block ends: an undecided attempt is no attempt.

``policy`` is ``Smile2Pay.payment_policy()`` taken when the attempt begins: its ``identity_threshold``
(:attr:`PaymentAttempt.identity_threshold`, the same number as ``Smile2Pay.identity_threshold``) is the one
threshold that approves payments. Identity scores come from :func:`smile2pay.scoring.identity_score`.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from .decision import engine
from .errors import GalleryError, RequestError, bad_chars
from .reasons import LOCKED_OUT, NOT_ENROLLED, REPLAY
from .scoring import identity_score, identity_scores
from .types import Decision, Face

#: the longest nonce a request may carry
MAX_NONCE_CHARS = 256


def check_nonce(nonce: str | None) -> None:
    """A request's nonce: None, or a non-empty string of at most 256 characters of text (else ``RequestError``)."""
    # a lone surrogate (a JSON "\\ud800") is not text: it cannot be hashed as UTF-8 nor stored
    if nonce is not None and (not isinstance(nonce, str) or not nonce or len(nonce) > MAX_NONCE_CHARS
                              or bad_chars(nonce, controls=False)):
        raise RequestError(f"nonce must be a non-empty string of at most {MAX_NONCE_CHARS} characters",
                           code="REQUEST_INVALID")


#: the longest request id a caller may give (it is written to the audit log as is)
MAX_REQUEST_ID_CHARS = 128


def check_request_id(request_id: str | None) -> None:
    """A caller's request id (an ``X-Request-ID`` header, ``verify(request_id=...)``): None, or a non-empty string
    of at most 128 printable characters (else ``RequestError``): it goes into every audit record as is."""
    if request_id is not None and (not isinstance(request_id, str) or not request_id.strip()
                                   or len(request_id) > MAX_REQUEST_ID_CHARS
                                   or bad_chars(request_id, delete=True)):
        raise RequestError(f"request_id must be a non-empty printable string of at most {MAX_REQUEST_ID_CHARS} "
                           f"characters", code="REQUEST_INVALID")


def frame_obs(face: Face, identity_score: float | None = None,
              au_probs: dict[str, float] | None = None) -> engine.FrameObs:
    """The one conversion of a ``Face`` into the engine's per-frame observation: its AU probabilities
    (or ``au_probs``, e.g. smoothed over a stream), aligned crop and landmarks (capture continuity), quality
    reasons and ``identity_score`` (None: not scored yet)."""
    return engine.FrameObs(identity_score=None if identity_score is None else float(identity_score),
                           au_probs=face.au_probs if au_probs is None else au_probs,
                           crop=face.identity_crop, landmarks=face.landmarks,
                           quality_reasons=list(face.quality.reasons))


def _pad_min(dec: Decision) -> float | None:
    scores = [s for s in ((dec.liveness or {}).get("pad") or {}).get("scores", []) if s is not None]
    return min(scores) if scores else None


class PaymentAttempt:
    """One payment decision in progress. Create with :meth:`smile2pay.Smile2Pay.begin`.

    Public attributes: ``user_id``, ``rule`` (a parsed :class:`~smile2pay.decision.rules.Rule`), ``liveness``
    (``"burst"``, ``"none"`` or ``"stream"``: what the audit says), ``request_id``, ``policy`` (the payment
    policy, thresholds included), ``templates`` (the user's enrolled embeddings, or None when ``early``),
    ``baseline`` (the user's neutral AU probabilities, or None), ``early`` (a declined Decision when the
    lockout, the nonce or the enrolment already decided; nothing else to do but :meth:`finish` it) and
    ``decided`` (the Decision once finished, else None).
    """

    def __init__(self, s2p, user_id: str, rule, *, liveness: str, nonce: str | None = None,
                 request_id: str | None = None, started: float | None = None) -> None:
        self.t0 = time.perf_counter() if started is None else float(started)
        self.user_id = user_id
        self.rule = rule
        self.liveness = liveness
        self.request_id = request_id or uuid.uuid4().hex
        self.policy = s2p.payment_policy()       # before the reservation: a failure here holds no slot
        self.templates: np.ndarray | None = None
        self.baseline: dict[str, float] | None = None
        self.early: Decision | None = None
        self.decided: Decision | None = None
        self._guard = s2p.guard
        self._fields = dict(user_id=user_id, rule=str(rule), model_pack=s2p.pipeline.pack.name,
                            policy_version=s2p.policy.version, request_id=self.request_id)
        locked, self._reservation = self._guard.reserve(user_id)     # counted before the work: no race
        try:
            if locked is not None:
                self.early = self.decline([LOCKED_OUT])
            elif nonce is not None and not self._guard.use_nonce(nonce):
                self.early = self.decline([REPLAY])
            else:
                try:
                    _, _, self.templates = s2p.gallery.templates(user_id)
                except GalleryError as e:
                    if e.code != "GALLERY_USER_NOT_FOUND":
                        raise
                    self.early = self.decline([NOT_ENROLLED])
                    return
                stored = s2p.gallery.au_baseline(user_id)
                self.baseline = stored["probs"] if stored else None
        except BaseException:
            self.abandon()
            raise

    # -- the one threshold and the one scorer ------------------------------------------------------
    @property
    def identity_threshold(self) -> float:
        """The cosine at or above which a face is the claimed user: the one threshold approving payments."""
        return float(self.policy.identity_threshold)

    def score(self, embedding: np.ndarray) -> float:
        """The 1:1 score of one embedding against the claimed user's templates."""
        return identity_score(self.templates, embedding)[0]

    def scores(self, embeddings) -> list[float]:
        """1:1 scores of several embeddings (one batched product)."""
        if len(embeddings) == 0:
            return []
        return [float(s) for s in identity_scores(self.templates, np.stack(list(embeddings)))]

    def matches(self, score: float | None) -> bool:
        return score is not None and float(score) >= self.identity_threshold

    def observe(self, face: Face, *, score: float | None = None,
                au_probs: dict[str, float] | None = None) -> engine.FrameObs:
        """``face`` as the engine's observation: ``score`` if given, else its 1:1 score when it is embedded
        (None when not: to be filled in later)."""
        if score is None and face.embedding is not None:
            score = self.score(face.embedding)
        return frame_obs(face, score, au_probs)

    # -- decisions ---------------------------------------------------------------------------------
    def decision(self, out: engine.Outcome, *, timings_ms: dict | None = None,
                 liveness: dict | None = None) -> Decision:
        """The Decision of an engine outcome, with this attempt's ids (``liveness`` replaces the outcome's)."""
        return Decision(out.approved, out.reasons, identity=out.identity, au=out.au,
                        liveness=out.liveness if liveness is None else liveness, frames=out.frames,
                        timings_ms=dict(timings_ms or {}), **self._fields)

    def decline(self, reasons: list[str]) -> Decision:
        """A declined Decision with these reasons and nothing measured."""
        return Decision(False, list(reasons), **self._fields)

    @property
    def finished(self) -> bool:
        return self.decided is not None

    def finish(self, decision: Decision, count_failure: bool, n_frames: int,
               extra_audit: dict | None = None) -> Decision:
        """Settle the attempt: an approval clears the user's failures; a decline keeps its lockout slot as a
        failure when ``count_failure`` (else the slot is released: a replayed nonce, a locked-out user);
        then the audit record. Returns ``decision`` with ``timings_ms["total"]``."""
        if self.decided is not None:
            raise RuntimeError(f"payment attempt {self.request_id} is already finished")
        decision.timings_ms["total"] = round((time.perf_counter() - self.t0) * 1000.0, 2)
        if count_failure or decision.approved:
            self._guard.record(self.user_id, decision.approved, reservation=self._reservation)
        else:
            self._guard.release(self._reservation)
        self._reservation = None
        self.decided = decision
        self._guard.audit({"request_id": self.request_id, "user_id": self.user_id, "approved": decision.approved,
                           "reasons": decision.reasons, "rule": str(self.rule), "liveness": self.liveness,
                           "identity_score": decision.identity.get("score"),
                           "identity_threshold": decision.identity.get("threshold"),
                           "frames": n_frames, "policy": self._fields["policy_version"],
                           "pad_min": _pad_min(decision), **(extra_audit or {})})
        return decision

    def abandon(self) -> None:
        """Give up an undecided attempt: its lockout slot is released and nothing is audited (an undecided
        attempt can never approve, so it is no attempt). Nothing happens once finished."""
        if self.decided is None and self._reservation is not None:
            res, self._reservation = self._reservation, None
            self._guard.release(res)

    def __enter__(self) -> "PaymentAttempt":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.abandon()
