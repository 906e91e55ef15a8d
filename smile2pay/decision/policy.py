"""Operating point of a decision: identity threshold at a named FAR, per-AU thresholds, baseline rule.

Thresholds come from a calibration file (written by ``smile2pay calibrate``)::

    {"format": "smile2pay.calibration/1",
     "model": "w600k_mbf:<sha256>",            # the embedding space the thresholds belong to
     "dataset": "...", "created": "YYYY-MM-DD",
     "identity": {"operating_points": [
         {"far": 1e-4, "threshold": 0.31, "impostors": 29000000, "false_accepts": 2900,
          "far_ci95": [..], "threshold_ci95": [..]}, ...]},
     "au": {"AU6": {"threshold": 0.5, "absent_threshold": 0.3, ...}, "AU12": {...}},
     "au_change": {"baseline_min_delta": 0.2, "burst_min_delta": 0.2}}   # written by calibrate-au

A default for the mobile pack ships in ``smile2pay/decision/calibration/mobile.json``. Payments use
a strict default operating point, FAR 1e-4 (NIST SP 800-63B asks biometric comparison to reach
FAR 1 in 1000 or better); a threshold calibrated on one population does not transfer to another,
so calibrate on data like the deployment's and pass the file here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError, RequestError
from .au_calibration import RISE_SCALES
from .continuity import ContinuitySettings, check_window
from .liveness import LivenessSettings

log = logging.getLogger("smile2pay.policy")

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
DEFAULT_FAR = 1e-4
FORMAT = "smile2pay.calibration/1"


@dataclass(frozen=True)
class Policy:
    identity_threshold: float
    identity_far: float | None
    identity_source: str
    au_thresholds: dict[str, float] = field(default_factory=dict)
    default_au_threshold: float = 0.5
    #: a frame counts as "pattern absent" (the neutral start of a burst) when EVERY required AU is
    #: below its absence threshold (default 0.5, independent of the presence thresholds): a half
    #: smile in between is neither absent nor present, and a smiling still whose AU6 flickers
    #: cannot fake an onset because its AU12 never drops
    absent_thresholds: dict[str, float] = field(default_factory=dict)
    default_absent_threshold: float = 0.5
    #: the smile must be a change from the user's own neutral baseline: each required AU's
    #: probability must exceed the baseline's by at least this much
    baseline_min_delta: float = 0.25
    #: the smile must also be a change within the burst: in frame i each required AU must exceed its
    #: lowest value in the frames before i by at least this much (0: off)
    burst_min_delta: float = 0.0
    #: the scale both rises are judged on: ``"probability"`` (p - ref >= delta) or ``"logit"`` (logit(p) -
    #: logit(ref) >= delta; :func:`smile2pay.decision.engine.raised`); the smile probe's calibration may set it
    rise_scale: str = "probability"
    #: thresholds for single-frame mode (``liveness="none"``: no neutral frame to judge a change from),
    #: calibrated on single frames; empty = the burst thresholds
    single_frame_au_thresholds: dict[str, float] = field(default_factory=dict)
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    #: one capture, not two photos (:mod:`smile2pay.decision.continuity`); limits from the calibration file
    continuity: ContinuitySettings = field(default_factory=ContinuitySettings)
    #: the limits a stream uses instead (``capture_continuity_stream`` in the calibration file); None = the same
    #: as bursts. A stream compares many more frame pairs than a burst, so one limit does not fit both
    stream_continuity: ContinuitySettings | None = None
    #: passive presentation-attack detection (MiniFASNet, :mod:`smile2pay.vision.pad`): "enforce" declines a
    #: frame whose p_real is below ``pad_threshold`` (PRESENTATION_ATTACK); "report" scores and reports only;
    #: "off" skips it. Faces under ``pad_min_face_px`` (short side, frame pixels) are not scored: the
    #: models reject nearly every low-resolution face (CK+ 48 px: BPCER 100%)
    pad_mode: str = "report"
    pad_threshold: float = 0.0938
    pad_min_face_px: float = 64.0
    version: str = ""
    #: gallery self-calibration (:mod:`smile2pay.decision.population`): the most lenient reference
    #: population's threshold at this FAR (the estimate never goes below it) and the heaviest
    #: reference tail shape ``z``; None = no self-calibration data in the file (threshold only raised)
    identity_floor: float | None = None
    identity_tail_z: float | None = None
    #: where the threshold in use came from (the gallery self-calibration's summary), reported in
    #: every Decision's identity section; None for a policy used outside a gallery
    identity_population: dict | None = None
    #: the smile probe's operating point (``au_probe`` in the calibration file, parsed by
    #: :func:`parse_probe_section`; None: the file has none): its weight, the AUs it is fused into and its own
    #: thresholds, absence thresholds, change deltas and single-frame thresholds
    probe_calibration: dict | None = None
    #: > 0 only in the policy :meth:`with_smile_probe` returns: the AUs in ``probe_aus`` are judged fused with
    #: each frame's probe logit (smile2pay.decision.engine.judged_probs)
    probe_weight: float = 0.0
    probe_aus: tuple[str, ...] = ()

    def with_smile_probe(self) -> "Policy | None":
        """The policy that judges the smile on the AU scores fused with the identity network's smile probe, with
        the probe's own calibrated thresholds; None when the calibration file has no ``au_probe`` section."""
        c = self.probe_calibration
        if not c:
            return None
        return replace(self, au_thresholds={**self.au_thresholds, **c["thresholds"]},
                       absent_thresholds={**self.absent_thresholds, **c["absent_thresholds"]},
                       baseline_min_delta=c.get("baseline_min_delta", self.baseline_min_delta),
                       burst_min_delta=c.get("burst_min_delta", self.burst_min_delta),
                       rise_scale=c.get("rise_scale", self.rise_scale),
                       single_frame_au_thresholds={**self.single_frame_au_thresholds, **c["single_frame_thresholds"]},
                       probe_weight=float(c["weight"]), probe_aus=tuple(c["aus"]))

    def au_threshold(self, au: str) -> float:
        return float(self.au_thresholds.get(au, self.default_au_threshold))

    def absent_threshold(self, au: str) -> float:
        return float(self.absent_thresholds.get(au, self.default_absent_threshold))

    def with_far(self, far: float, calibration: dict) -> "Policy":
        op = pick_operating_point(calibration, far)
        return replace(self, identity_threshold=float(op["threshold"]), identity_far=float(op["far"]),
                       **_self_calibration_fields(calibration, op))

    @classmethod
    def from_calibration(cls, path: str | Path | None = None, far: float = DEFAULT_FAR, *,
                         model_fingerprint: str | None = None, **overrides) -> "Policy":
        path = Path(path) if path else CALIBRATION_DIR / "mobile.json"
        cal = load_calibration(path)
        if model_fingerprint and cal.get("model") and cal["model"] != model_fingerprint:
            raise ConfigError(f"calibration {path} was made for model {cal['model']}, not {model_fingerprint}; "
                              f"thresholds of one embedding space mean nothing in another",
                              code="CALIBRATION_MODEL_MISMATCH", file=str(path))
        op = pick_operating_point(cal, far)
        src = str(path)
        au_sec = _au_section(cal.get("au"), "au", src)
        au = {k: _number(v["threshold"], f"au {k} threshold", src) for k, v in au_sec.items() if "threshold" in v}
        absent = {k: _number(v["absent_threshold"], f"au {k} absent_threshold", src) for k, v in au_sec.items()
                  if "absent_threshold" in v}
        change = cal.get("au_change") or {}
        if not isinstance(change, dict):
            raise ConfigError(f"{src}: au_change must be an object", code="CALIBRATION_INVALID", file=src)
        single = {k: _number(v["threshold"], f"au_single_frame {k} threshold", src)
                  for k, v in _au_section(cal.get("au_single_frame"), "au_single_frame", src).items()
                  if "threshold" in v}
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]

        kw = dict(identity_threshold=float(op["threshold"]), identity_far=float(op["far"]),
                  identity_source=f"{path.name}@{digest}", au_thresholds=au, absent_thresholds=absent,
                  single_frame_au_thresholds=single,
                  **_self_calibration_fields(cal, op, src),
                  version=f"{cal.get('format', FORMAT)}:{path.name}@{digest}:far={op['far']:g}")
        for k in ("baseline_min_delta", "burst_min_delta"):
            if k in change:
                kw[k] = _number(change[k], f"au_change {k}", src)
        kw.update(parse_pad_section(cal.get("pad"), str(path)))
        if cal.get("au_probe"):
            kw["probe_calibration"] = parse_probe_section(cal["au_probe"], str(path))
        for section, key in (("capture_continuity", "continuity"), ("capture_continuity_stream", "stream_continuity")):
            if cal.get(section):
                kw[key] = parse_continuity_section(cal[section], section, str(path))
        if not cal.get("capture_continuity") and "continuity" not in overrides:
            log.warning("calibration %s has no capture_continuity section: bursts are judged with the code's early "
                        "whole-crop limits; fit them with `smile2pay calibrate-continuity` or start the file from "
                        "the shipped one", path)
        if "continuity" in overrides and "stream_continuity" not in overrides:
            kw.pop("stream_continuity", None)   # an explicit continuity override applies to streams too
        kw.update(overrides)
        return cls(**kw)


def parse_pad_section(pad, source: str = "calibration") -> dict:
    """The ``pad`` section (``mode``, ``threshold``, ``min_face_px``; written by ``smile2pay calibrate-pad``) ->
    Policy keyword arguments. Absent keys keep the Policy defaults; a malformed value is a ConfigError
    (``CALIBRATION_INVALID``), never a silent default: a mistyped ``"enforce"`` must not leave PAD off."""
    if pad is None or pad == {}:
        return {}
    if not isinstance(pad, dict):
        raise ConfigError(f"{source}: pad must be an object", code="CALIBRATION_INVALID", file=source)
    kw = {}
    if "mode" in pad:
        if pad["mode"] not in ("enforce", "report", "off"):
            raise ConfigError(f"{source}: pad mode must be enforce, report or off, got {pad['mode']!r}",
                              code="CALIBRATION_INVALID", file=source)
        kw["pad_mode"] = pad["mode"]
    for k_cal, k_pol, lo, hi in (("threshold", "pad_threshold", 0.0, 1.0),
                                 ("min_face_px", "pad_min_face_px", 1e-9, math.inf)):
        if k_cal not in pad:
            continue
        kw[k_pol] = _number(pad[k_cal], f"pad {k_cal}", source, lo, hi)
    return kw


def parse_continuity_section(cc, section: str = "capture_continuity", source: str = "calibration"
                             ) -> ContinuitySettings:
    """A ``capture_continuity`` / ``capture_continuity_stream`` section (written by
    ``benchmarks/capture_continuity.py --write-calibration``) -> :class:`ContinuitySettings`; a scale or limit
    that is not a positive number is a ConfigError (``CALIBRATION_INVALID``)."""
    if not isinstance(cc, dict):
        raise ConfigError(f"{source}: {section} must be an object", code="CALIBRATION_INVALID", file=source)
    vals = {}
    for k in ("scale_lighting", "scale_upper", "scale_yaw", "scale_roll", "max_score", "scale_balance",
              "scale_contrast"):
        if k not in cc:
            continue
        v = cc[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{source}: {section} {k} must be a positive number, got {v!r}",
                              code="CALIBRATION_INVALID", file=source)
        vals[k] = float(v)
    if cc.get("window") is not None:
        try:
            vals["window"] = check_window(cc["window"])
        except ValueError as e:
            raise ConfigError(f"{source}: {section} {e}", code="CALIBRATION_INVALID", file=source) from None
    return ContinuitySettings(**vals)


def parse_probe_section(sec, source: str = "calibration") -> dict:
    """The ``au_probe`` section (written by ``benchmarks/au_identity_features.py --write-calibration``) ->
    ``{"weight", "aus", "thresholds", "absent_thresholds", "single_frame_thresholds"[, "baseline_min_delta",
    "burst_min_delta", "rise_scale", "single_frame_weight"], "model"}``; a malformed section is a ConfigError, never
    a silent default. ``single_frame_weight`` (optional; absent: ``weight``) is the probe's weight in single-frame
    mode, where no neutral frame is judged and the decision rests on one frame's appearance alone. ``rise_scale``
    (in ``au_change``; absent: ``"probability"``) is the scale both rises are judged on; a logit-scale delta may
    be up to 8."""
    def num(v, what):
        return _number(v, f"au_probe {what}", source)

    if not isinstance(sec, dict):
        raise ConfigError(f"{source}: au_probe must be an object", code="CALIBRATION_INVALID", file=source)
    w = num(sec.get("weight"), "weight")
    if w <= 0:
        raise ConfigError(f"{source}: au_probe weight must be > 0", code="CALIBRATION_INVALID", file=source)
    au = sec.get("au")
    if not isinstance(au, dict) or not au or not all(isinstance(v, dict) for v in au.values()):
        raise ConfigError(f"{source}: au_probe.au must map AU names to their thresholds", code="CALIBRATION_INVALID",
                          file=source)
    single, change = sec.get("au_single_frame") or {}, sec.get("au_change") or {}
    if not isinstance(single, dict) or not all(isinstance(v, dict) for v in single.values()) \
            or not isinstance(change, dict):
        raise ConfigError(f"{source}: au_probe.au_single_frame must map AU names to objects and au_probe.au_change "
                          f"must be an object", code="CALIBRATION_INVALID", file=source)
    model = sec.get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{source}: au_probe.model must be a string", code="CALIBRATION_INVALID", file=source)
    out = {"weight": w, "aus": sorted(au, key=lambda a: int(a[2:]) if a[2:].isdigit() else 999),
           "thresholds": {a: num(v.get("threshold"), f"{a} threshold") for a, v in au.items()},
           "absent_thresholds": {a: num(v.get("absent_threshold"), f"{a} absent_threshold") for a, v in au.items()},
           "single_frame_thresholds": {a: num(v.get("threshold"), f"{a} single-frame threshold")
                                       for a, v in single.items()},
           "model": model}
    scale = change.get("rise_scale", "probability")
    if scale not in RISE_SCALES:
        raise ConfigError(f"{source}: au_probe.au_change.rise_scale must be one of {RISE_SCALES}, got {scale!r}",
                          code="CALIBRATION_INVALID", file=source)
    if "rise_scale" in change:
        out["rise_scale"] = scale
    for k, v in change.items():
        if k in ("baseline_min_delta", "burst_min_delta"):
            # a logit-scale rise may exceed 1 (logit 1.0 is 0.5 -> 0.73)
            out[k] = _number(v, f"au_probe {k}", source, hi=1.0 if scale == "probability" else 8.0)
    if sec.get("single_frame_weight") is not None:
        sw = num(sec["single_frame_weight"], "single_frame_weight")
        if sw <= 0:
            raise ConfigError(f"{source}: au_probe single_frame_weight must be > 0", code="CALIBRATION_INVALID",
                              file=source)
        out["single_frame_weight"] = sw
    return out


def _number(v, what: str, source: str, lo: float = 0.0, hi: float = 1.0) -> float:
    """``v`` as a float when it is a finite number in [lo, hi]; anything else (a string, null, NaN, a bool) is a
    ConfigError ``CALIBRATION_INVALID`` naming the field."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ConfigError(f"{source}: {what} must be a number in [{lo:g}, {hi:g}], got {v!r}",
                          code="CALIBRATION_INVALID", file=source)
    return float(v)


def _au_section(sec, name: str, source: str) -> dict:
    """An ``au`` / ``au_single_frame`` section: an object mapping AU names to objects (absent: {})."""
    if sec is None:
        return {}
    if not isinstance(sec, dict) or not all(isinstance(v, dict) for v in sec.values()):
        raise ConfigError(f"{source}: {name} must map AU names to objects (e.g. AU12: {{threshold: 0.5}})",
                          code="CALIBRATION_INVALID", file=source)
    return sec


def _self_calibration_fields(cal: dict, op: dict, source: str = "calibration") -> dict:
    """``identity_floor`` (most lenient population at this FAR) and ``identity_tail_z`` of an operating point."""
    per_pop, tail = op.get("per_population") or {}, cal["identity"].get("tail_shape") or {}
    if not isinstance(per_pop, dict) or not isinstance(tail, dict) or not isinstance(tail.get("z") or {}, dict):
        raise ConfigError(f"{source}: identity per_population, tail_shape and tail_shape.z must be objects",
                          code="CALIBRATION_INVALID", file=source)
    per_pop = [float(v) for v in per_pop.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    z = (tail.get("z") or {}).get(f"{float(op['far']):g}")
    return {"identity_floor": min(per_pop) if per_pop else None,
            "identity_tail_z": float(z) if isinstance(z, (int, float)) else None}


def load_calibration(path: str | Path) -> dict:
    p = Path(path)
    try:
        cal = json.loads(p.read_text(encoding="utf-8-sig"))   # -sig: an editor's byte order mark
    except FileNotFoundError:
        raise ConfigError(f"calibration file not found: {p}", code="CALIBRATION_MISSING", file=str(p)) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"calibration file {p} is not valid JSON: {e}", code="CALIBRATION_INVALID",
                          file=str(p)) from None
    if not isinstance(cal, dict) or cal.get("format") != FORMAT:
        raise ConfigError(f"{p} is not a smile2pay calibration file (format {FORMAT})",
                          code="CALIBRATION_INVALID", file=str(p))
    ident = cal.get("identity") or {}
    ops = (ident.get("operating_points") or []) if isinstance(ident, dict) else []
    if not ops or not isinstance(ops, list) or not all(isinstance(o, dict) and "far" in o and "threshold" in o
                                                       for o in ops):
        raise ConfigError(f"{p} has no identity operating points", code="CALIBRATION_INVALID", file=str(p))
    for o in ops:   # a NaN or out-of-range threshold would silently refuse (or accept) everyone
        far = o["far"]
        if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0.0 < far < 1.0:
            raise ConfigError(f"{p}: identity operating point far must be a number in (0, 1), got {far!r}",
                              code="CALIBRATION_INVALID", file=str(p))
        # cosine similarity: [-1, 1] (a threshold above every impostor score of 1.0 is a hair above 1)
        _number(o["threshold"], f"identity threshold at FAR {far:g}", str(p), -1.0, 1.0 + 1e-6)
    return cal


def write_calibration(path: str | Path, cal: dict) -> Path:
    """Write a calibration dict as JSON atomically (a temporary file, then a rename): a reader never sees half a
    calibration file. Creates the parent folder. A path that cannot be written (a folder, no permission, no
    such parent) is a RequestError ``REQUEST_INVALID`` naming it, and leaves no temporary file behind."""
    out = Path(path)
    tmp = out.with_suffix(out.suffix + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cal, indent=1) + "\n")
        tmp.replace(out)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise RequestError(f"cannot write the calibration file {out}: {e.strerror or e}", code="REQUEST_INVALID",
                           field="out", path=str(out)) from None
    return out


def pick_operating_point(cal: dict, far: float) -> dict:
    if not isinstance(far, (int, float)) or isinstance(far, bool) or not math.isfinite(far) or not 0 < far < 1:
        raise ConfigError(f"far must be a number in (0, 1), got {far!r}", code="FAR_INVALID", far=str(far))
    ops = cal["identity"]["operating_points"]
    for o in ops:
        if abs(float(o["far"]) - far) <= 1e-12 * max(1.0, far):
            return o
    have = sorted(float(o["far"]) for o in ops)
    raise ConfigError(f"no operating point at FAR {far:g} in the calibration; available: {have}",
                      code="CALIBRATION_NO_OPERATING_POINT", far=far, available=have)
