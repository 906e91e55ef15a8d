"""Every reason code a Decision can carry, every quality reason and every stream state, in one place.

A code is a plain upper-case string (it travels in JSON, the audit and HTTP bodies unchanged); the
constant here is the only assignment of it. Other modules import the names, never retype the string.
``DESCRIPTIONS`` is what ``docs/`` and ``smile2pay explain`` show for each code.
"""
from __future__ import annotations

# --- one frame: what the detector / quality gates say (Face.quality.reasons, FrameObs.error) ---------
NO_FACE = "NO_FACE"
MULTIPLE_FACES = "MULTIPLE_FACES"
FACE_TOO_SMALL = "FACE_TOO_SMALL"
LOW_DET_SCORE = "LOW_DET_SCORE"
EXTREME_POSE = "EXTREME_POSE"
BLURRY = "BLURRY"
UNDEREXPOSED = "UNDEREXPOSED"
OVEREXPOSED = "OVEREXPOSED"
QUALITY_REASONS = (FACE_TOO_SMALL, LOW_DET_SCORE, EXTREME_POSE, BLURRY, UNDEREXPOSED, OVEREXPOSED)

# --- enrolment ---------------------------------------------------------------------------------------
NOT_NEUTRAL = "NOT_NEUTRAL"                  # an enrolment image shows the AU pattern

# --- the decision (engine, liveness, continuity, PAD, guard) -----------------------------------------
LOW_QUALITY = "LOW_QUALITY"
IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
AU_PATTERN_ABSENT = "AU_PATTERN_ABSENT"
NO_CHANGE_FROM_BASELINE = "NO_CHANGE_FROM_BASELINE"
NOT_ENROLLED = "NOT_ENROLLED"
LOCKED_OUT = "LOCKED_OUT"
REPLAY = "REPLAY"
PRESENTATION_ATTACK = "PRESENTATION_ATTACK"
INVALID_OBSERVATION = "INVALID_OBSERVATION"  # NaN / infinite score or probability, no frames
LIVENESS_FAILED = "LIVENESS_FAILED"
NO_ONSET = "NO_ONSET"                        # liveness detail: the pattern never appeared after being absent
TOO_FEW_FRAMES = "TOO_FEW_FRAMES"
CAPTURE_DISCONTINUITY = "CAPTURE_DISCONTINUITY"

# --- a stream adds these to the engine's ---------------------------------------------------------------
TIMEOUT = "TIMEOUT"
SECOND_FACE = "SECOND_FACE"
TRACK_LOST = "TRACK_LOST"
WINDOW_EXPIRED = "WINDOW_EXPIRED"
FRAME_UNREADABLE = "FRAME_UNREADABLE"
CHALLENGE_FAILED = "CHALLENGE_FAILED"        # the face did not follow the prompts (a smile before "Now smile")
INTERNAL = "INTERNAL"                        # the stream worker failed; the attempt is declined, not counted

# --- stream states -------------------------------------------------------------------------------------
WAITING_FOR_FACE = "WAITING_FOR_FACE"
HOLD_NEUTRAL = "HOLD_NEUTRAL"
SMILE_NOW = "SMILE_NOW"
RELAX = "RELAX"                              # challenge: back to neutral after the smile
APPROVED = "APPROVED"
DECLINED = "DECLINED"
STATES = (WAITING_FOR_FACE, HOLD_NEUTRAL, SMILE_NOW, RELAX, APPROVED, DECLINED)
FINAL_STATES = (APPROVED, DECLINED)

# --- stream events (in a session's event log, not reasons) ----------------------------------------------
TRACK_START = "TRACK_START"
EARLY_SMILE = "EARLY_SMILE"
EVENTS = (TRACK_START, EARLY_SMILE)

DESCRIPTIONS: dict[str, str] = {
    NO_FACE: "no face found in the frame",
    MULTIPLE_FACES: "more than one face where exactly one is needed (a burst frame; a stream frame with a face "
                    "beside the user's)",
    FACE_TOO_SMALL: "the face is smaller than the quality minimum",
    LOW_DET_SCORE: "the detector is not sure this is a face",
    EXTREME_POSE: "the head is turned or tilted too far",
    BLURRY: "the face crop is blurred",
    UNDEREXPOSED: "the face crop is too dark",
    OVEREXPOSED: "the face crop is too bright",
    NOT_NEUTRAL: "an enrolment image shows the required AU pattern; enrol a neutral face",
    LOW_QUALITY: "a frame the decision needs failed a quality gate (see quality_reasons)",
    IDENTITY_MISMATCH: "the face is not the claimed user at the payment threshold",
    AU_PATTERN_ABSENT: "the required action units were not shown",
    NO_CHANGE_FROM_BASELINE: "the AU pattern did not rise over the user's enrolled neutral baseline",
    NOT_ENROLLED: "the claimed user is not in the gallery",
    LOCKED_OUT: "too many failed attempts; the user is locked out for a while",
    REPLAY: "the frames (or the nonce) were seen before",
    PRESENTATION_ATTACK: "the presentation-attack detector scored a frame below its threshold",
    INVALID_OBSERVATION: "a measurement is not a finite number, or there are no frames",
    LIVENESS_FAILED: "no change from neutral to the AU pattern within the burst",
    NO_ONSET: "the pattern never appeared after being absent",
    TOO_FEW_FRAMES: "a burst needs at least two frames",
    CAPTURE_DISCONTINUITY: "consecutive frames do not come from one continuous capture",
    TIMEOUT: "the stream ended or its time ran out before a decision",
    SECOND_FACE: "another face appeared in the stream",
    TRACK_LOST: "the tracked face left the frame",
    WINDOW_EXPIRED: "the smile came too late after the neutral frame",
    FRAME_UNREADABLE: "a stream frame could not be decoded",
    CHALLENGE_FAILED: "the face did not follow the prompts",
    INTERNAL: "the stream's worker failed (logged); declined without counting as a failed attempt",
}

#: every code a Decision's ``reasons`` may contain
DECISION_REASONS = frozenset(DESCRIPTIONS) - {NOT_NEUTRAL}


def describe(code: str) -> str:
    """One line for a reason code ('' for an unknown one)."""
    return DESCRIPTIONS.get(code, "")
