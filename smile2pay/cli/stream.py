"""``smile2pay watch`` (a payment from a camera or a video file) and ``smile2pay replay`` (timeline PNG).

    smile2pay watch --gallery G --user ID (--camera N | --video FILE) [--require RULE] [--record FILE] --json

With ``--json`` every state update is one JSON line on stdout, then the final line
``{"final": true, "decision": {...}}``. Exit codes: 0 approved, 1 declined, 2 bad input or setup.
A video file is processed frame by frame in stream time (its own timestamps) unless ``--realtime``
(frames are offered at the file's frame rate and skipped when the pipeline is slower, as a camera's
are). ``--record FILE`` writes per-frame states, AU probabilities and identity scores (no images, no
embeddings) as JSON; ``smile2pay replay FILE --png OUT`` renders it (needs the ``viz`` extra, matplotlib:
without it, exit 2 with ``EXTRA_MISSING``, checked in :func:`smile2pay.cli.main` before the command runs).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from .main import FAR_HELP, POLICY_HELP, add_runtime_args, command, settings_from
from .gallery import gallery_args, gallery_settings_from
from ..errors import RequestError
from ..reasons import APPROVED, DECLINED

log = logging.getLogger(__name__)


def _cfg_watch(p):
    gallery_args(p)
    p.add_argument("--user", required=True, help="the claimed user id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, help="OpenCV camera index")
    src.add_argument("--video", help="video file")
    p.add_argument("--require", default="AU6+AU12", help="AU rule, e.g. 'AU6+AU12'")
    p.add_argument("--nonce", help="single-use request nonce")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds of stream time before DECLINED/TIMEOUT")
    p.add_argument("--window", type=float, default=5.0, help="seconds allowed from the last neutral frame to the smile")
    p.add_argument("--smoothing", type=float, default=0.6, help="EMA weight of the newest frame (1 = none)")
    p.add_argument("--challenge", action="store_true",
                   help="'Now smile' comes at a random time chosen by the session and the face must relax after "
                        "the smile: a pre-recorded clip does not follow (declined CHALLENGE_FAILED)")
    p.add_argument("--pad", choices=["enforce", "report", "off"], help="passive presentation-attack detection: enforce (decline PRESENTATION_ATTACK), report (score only) or off; default: the calibration file's mode (report)")
    p.add_argument("--realtime", action="store_true",
                   help="video: offer frames at the file's frame rate, skipping when the pipeline lags")
    p.add_argument("--record", help="write the per-frame recording (no images) to this JSON file")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--far", type=float, default=1e-4, help=FAR_HELP)
    add_runtime_args(p, detector=False)


def open_capture(camera: int | None = None, video: str | None = None):
    import cv2

    if video is not None:
        if not Path(video).is_file():
            raise RequestError(f"video file not found: {video}", code="VIDEO_UNREADABLE", path=str(video))
        try:
            cap = cv2.VideoCapture(str(video))
        except cv2.error as e:
            raise RequestError(f"cannot open video {video}: {e}", code="VIDEO_UNREADABLE", path=str(video)) from None
    else:
        # OpenCV takes a C int; -1 ("any camera") crashes some builds' backends outright (a segfault, no error)
        if not 0 <= int(camera) < 2 ** 31:
            raise RequestError(f"camera index must be from 0 (the first camera) to {2 ** 31 - 1}, got {camera}",
                               code="VIDEO_UNREADABLE", camera=int(camera))
        try:
            cap = cv2.VideoCapture(int(camera))
        except cv2.error as e:
            raise RequestError(f"cannot open camera {camera}: {e}", code="VIDEO_UNREADABLE") from None
    if not cap.isOpened():
        what = f"video {video}" if video is not None else f"camera {camera}"
        raise RequestError(f"cannot open {what}", code="VIDEO_UNREADABLE")
    return cap


def watch_capture(session, cap, *, live: bool, realtime: bool = False, on_update=None) -> Any:
    """Feed an OpenCV capture into a session until it is final or the source ends.

    ``live`` (a camera): frames are offered (latest wins) with wall-clock timestamps. A file:
    pushed one by one in its own time (frame index / fps), or offered at its frame rate with
    ``realtime``. Returns the final StreamUpdate. ``on_update`` gets every update."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not fps or fps != fps or fps > 240:
        fps = 30.0
    if on_update is not None:
        session.add_listener(on_update)
    i = 0
    t_start = time.monotonic()
    last_ts = 0.0
    n_read = 0
    while not session.final:
        ok, frame = cap.read()
        if not ok or frame is None:
            break
        n_read += 1
        if live:
            last_ts = time.monotonic()
            session.offer(frame, last_ts)
        elif realtime:
            last_ts = i / fps
            wait = t_start + last_ts - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            session.offer(frame, last_ts)
        else:
            last_ts = i / fps
            session.push(frame, last_ts)
        i += 1
    if n_read == 0 and not session.final:
        raise RequestError("the video source gave no frames", code="VIDEO_UNREADABLE")
    upd = session.end(last_ts if not live else None)
    return upd


def _human_watch(d: dict, code: int) -> str:
    dec = d.get("decision") or {}
    head = APPROVED if dec.get("approved") else f"{DECLINED}: {', '.join(dec.get('reasons') or [])}"
    return head + (f"  (recording: {d['record']})" if d.get("record") else "")


@command("watch", _cfg_watch, human=_human_watch, examples="""\
examples:
  smile2pay watch --gallery shop --user alice --camera 0           # a live till: one line per state
  smile2pay watch --gallery shop --user alice --video clip.mp4 --record rec.json --json
exit: 0 approved, 1 declined (or timed out), 2 bad input or setup""")
def cmd_watch(args) -> tuple[Any, int]:
    """Pay from a camera or a video file, live.

    Prints each state (hold neutral, smile now) as it changes, then the decision."""
    from ..api import Smile2Pay

    out = getattr(args, "_out", None)
    lock = threading.Lock()

    def emit(upd) -> None:
        d = upd.to_dict()
        d.pop("decision", None)
        with lock:
            if out is None:
                return
            if args.json:
                out.write(json.dumps(d, default=str) + "\n")
            else:
                au = " ".join(f"{k} {v:.2f}" for k, v in d["au"].items())
                sc = "" if d["identity_score"] is None else f" id {d['identity_score']:.2f}"
                out.write(f"t={d['t']:6.2f}s {d['state']:16s} {au}{sc} {','.join(d['reasons'])}\n")
            out.flush()

    if args.record:   # an unwritable recording is bad input: said now, not after the shopper has paid
        rec = Path(args.record)
        if rec.is_dir() or not rec.parent.is_dir():
            raise RequestError(f"cannot write the recording {rec}: "
                               f"{'it is a folder' if rec.is_dir() else f'no folder {rec.parent}'}",
                               code="REQUEST_INVALID", field="record", path=str(rec))
    cap = open_capture(args.camera, args.video)   # bad source: exit 2 before loading any model
    try:
        with Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=gallery_settings_from(args),
                       policy=args.policy, far=args.far, create=False, pad=args.pad) as s2p:
            with s2p.start_session(args.user, require=args.require, nonce=args.nonce, timeout_s=args.timeout,
                                   window_s=args.window, smoothing=args.smoothing, challenge=args.challenge,
                                   record=bool(args.record)) as session:
                watch_capture(session, cap, live=args.camera is not None, realtime=args.realtime, on_update=emit)
                dec = session.decision
                if args.record:
                    try:
                        Path(args.record).write_text(json.dumps(session.recording(), indent=1, default=str))
                    except OSError as e:
                        raise RequestError(f"cannot write the recording {args.record}: {e.strerror or e}",
                                           code="REQUEST_INVALID", field="record", path=str(args.record)) from None
    finally:
        cap.release()
    payload = {"final": True, "state": APPROVED if dec.approved else DECLINED, "decision": dec.to_dict()}
    if args.record:
        payload["record"] = args.record
    return payload, 0 if dec.approved else 1


def _cfg_replay(p):
    p.add_argument("record", help="a recording written by 'smile2pay watch --record'")
    p.add_argument("--png", required=True, help="timeline image to write")


@command("replay", _cfg_replay, models=False, examples="""\
examples:
  smile2pay replay rec.json --png timeline.png""")
def cmd_replay(args) -> tuple[Any, int]:
    """Draw a watch --record recording as a PNG timeline.

    Needs the viz extra (matplotlib)."""
    from ..stream.plot import render_timeline

    try:
        rec = json.loads(Path(args.record).read_text())
    except FileNotFoundError:
        raise RequestError(f"recording not found: {args.record}", code="REQUEST_INVALID") from None
    except ValueError as e:
        raise RequestError(f"recording {args.record} is not JSON: {e}", code="REQUEST_INVALID") from None
    if not isinstance(rec, dict):
        raise RequestError("recording must be a JSON object", code="REQUEST_INVALID")
    render_timeline(rec, args.png)
    dec = rec.get("decision") or {}
    return {"png": args.png, "frames": len(rec.get("frames") or []), "approved": dec.get("approved"),
            "reasons": dec.get("reasons")}, 0
