"""Per-frame cost of a smile2pay decision against InsightFace ``FaceAnalysis.get`` on the same frames.

One process, one onnxruntime thread, the process pinned to one core, runs alternating within each round
(machines are noisy: compare the ratios of one run, not numbers across runs). Frames: 640x480
camera-like frames (``smile2pay_tools.bench.clips``) of CK+ neutral -> peak stills of subjects with an
AU6+AU12 smile, enrolled from their composed neutral still.

Timed per frame (median / p95 over every run):

* ``burst``: ``Smile2Pay.verify`` on a 4-frame burst (2 neutral, 2 smile frames) / 4, with PAD on
  (the policy's default "report": scored, not enforced) and off; with identity only where it decides
  (``identity_frames="decision"``, the default) and on every frame (``"all"``: the reference path);
* ``stream``: a stream session pushing a 12 neutral + 12 smile frame clip until the decision, per push;
* ``insightface``: ``FaceAnalysis(name=<folder with the same det_500m + w600k_mbf files>).get(frame)``
  at det_size (320, 320), sessions with the same options (1 intra-op thread, spinning off);
* ``insightface_get_rewritten``: the same app with its recognition session loaded from the graph smile2pay
  loads (``smile2pay.models.graph``: PRelu as Relu/Mul/Add, same weights and function), so the share of the
  ratio that is the rewrite and the share that is the pipeline can be told apart;
* ``burst_pad_off_norewrite``: the burst with ``Settings.graph_rewrite=False`` (the graphs as on disk);
* ``burst_pad_on_no_first_look``: the default burst with ``Settings.burst_first_look=0`` (the first frame on the
  ladder, as before 2026-12-07), so the first look's share can be read in the same run;
* ``burst_pad_enforced``: the burst with PAD enforced (``pad="enforce"``: both MiniFASNets on every frame; on these
  CK+ frames it declines ``PRESENTATION_ATTACK``, the cost is what is timed);
* ``burst_pad_off_wholeframe``: the burst with ``Settings.window_face_px=0`` (every frame detected on the whole
  frame instead of the first frame's window; its decisions are compared with the window path's, and may
  differ where a burst is borderline: see ``benchmarks/burst_window.py`` for that comparison at scale).

Decisions of the fast and the reference paths are recorded per subject (they must agree). Nothing here
asserts a time.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from smile2pay.reasons import APPROVED

from . import common as C

log = logging.getLogger("smile2pay_tools.bench.latency_vs_insightface")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subjects", type=int, default=4, help="CK+ subjects with an AU6+AU12 sequence")
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds (each: every mode on every subject)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--core", type=int, default=None, help="pin the process to this core (default: the last)")
    p.add_argument("--stream-neutral", type=int, default=12)
    p.add_argument("--stream-smile", type=int, default=12)
    p.add_argument("--out", default="bench_out/latency_vs_insightface")
    p.add_argument("--name", default="latency_vs_insightface")


def _stats(a) -> dict:
    a = np.asarray(a, float)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean()),
            "n": int(a.size)}


def _insightface_app(models_dir: Path, tmp: Path):
    from insightface.app import FaceAnalysis

    from smile2pay.models.runtime import session_options

    pack = tmp / "if_models" / "det500m_mbf"
    pack.mkdir(parents=True)
    for f in ("det_500m.onnx", "w600k_mbf.onnx"):
        os.symlink(Path(models_dir).resolve() / f, pack / f)   # absolute: a relative models dir breaks the link
    app = FaceAnalysis(name=str(pack), root=str(tmp / "if_models"), providers=["CPUExecutionProvider"],
                       sess_options=session_options(1))
    app.prepare(ctx_id=-1, det_size=(320, 320))
    return app


def _rewritten(app, models_dir: Path):
    """``app`` with its recognition session replaced by one on smile2pay's rewritten graph."""
    from smile2pay.models.runtime import create_session

    app.models["recognition"].session, _ = create_session(Path(models_dir) / "w600k_mbf.onnx", threads=1,
                                                          name="w600k_mbf")
    return app


def run(args) -> dict:
    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.pipeline import FacePipeline

    from . import clips

    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    data = data_dir()
    quality = QualitySettings(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)
    pipe = FacePipeline(Settings.from_env(models=getattr(args, "models", None), quality=quality, threads=1))
    models_dir = Path(pipe.store.path("w600k_mbf")).parent
    people = clips.smiling_people(data, args.subjects)
    tmp = Path(tempfile.mkdtemp(prefix="s2p_lat_if_"))
    app = _insightface_app(models_dir, tmp)
    app_rw = _rewritten(_insightface_app(models_dir, tmp / "rw"), models_dir)
    pipe_raw = FacePipeline(Settings.from_env(models=getattr(args, "models", None), quality=quality, threads=1,
                                              graph_rewrite=False))
    pipe_whole = FacePipeline(Settings.from_env(models=getattr(args, "models", None), quality=quality, threads=1,
                                                window_face_px=0))
    guard = GuardSettings(max_failures=10 ** 6)
    s2p = {pad: Smile2Pay(tmp / f"g_{pad}", pipeline=pipe, pad=pad, guard_settings=guard)
           for pad in ("report", "off")}
    s2p["off_norewrite"] = Smile2Pay(tmp / "g_off_norewrite", pipeline=pipe_raw, pad="off", guard_settings=guard)
    s2p["off_whole"] = Smile2Pay(tmp / "g_off_whole", pipeline=pipe_whole, pad="off", guard_settings=guard)
    pipe_nolook = FacePipeline(Settings.from_env(models=getattr(args, "models", None), quality=quality, threads=1,
                                                 burst_first_look=0))
    s2p["report_nolook"] = Smile2Pay(tmp / "g_report_nolook", pipeline=pipe_nolook, pad="report", guard_settings=guard)
    s2p["enforce"] = Smile2Pay(tmp / "g_enforce", pipeline=pipe, pad="enforce", guard_settings=guard)
    for s in s2p.values():
        for subj, neutral, _ in people:
            s.enroll(subj, [clips.compose(neutral)], kind="neutral")
    bursts = {subj: clips.clip_frames([(n, 2), (pk, 2)], seed=i) for i, (subj, n, pk) in enumerate(people)}
    streams = {subj: clips.clip_frames([(n, args.stream_neutral), (pk, args.stream_smile)], seed=100 + i)
               for i, (subj, n, pk) in enumerate(people)}

    def burst(pad, frames_mode, subj):
        s = s2p[pad]
        s.identity_frames = frames_mode
        t0 = time.perf_counter()
        d = s.verify(subj, bursts[subj])
        dt = (time.perf_counter() - t0) * 1000.0
        return [dt / len(bursts[subj])], d

    def stream(frames_mode, subj, pad="off"):
        s = s2p[pad]            # a stream scores PAD only on its decision frames; see the pad-on row
        s.identity_frames = frames_mode
        per = []
        with s.start_session(subj) as sess:
            for i, fr in enumerate(streams[subj]):
                t0 = time.perf_counter()
                u = sess.push(fr, i / 30.0)
                per.append((time.perf_counter() - t0) * 1000.0)
                if u.final:
                    break
            d = sess.decision
        return per, d

    def stream_pad(frames_mode, subj):
        return stream(frames_mode, subj, pad="report")

    def fa(subj, a=app):
        per = []
        for fr in bursts[subj]:
            t0 = time.perf_counter()
            faces = a.get(fr)
            per.append((time.perf_counter() - t0) * 1000.0)
            assert faces, "FaceAnalysis found no face"
        return per, None

    modes = {
        "burst_pad_off": lambda s: burst("off", "decision", s),
        "burst_pad_off_allframes": lambda s: burst("off", "all", s),
        "burst_pad_off_smileonly": lambda s: burst("off", "smile", s),
        "burst_pad_off_norewrite": lambda s: burst("off_norewrite", "decision", s),
        "burst_pad_off_wholeframe": lambda s: burst("off_whole", "decision", s),
        "burst_pad_on": lambda s: burst("report", "decision", s),
        "burst_pad_on_allframes": lambda s: burst("report", "all", s),
        "burst_pad_on_no_first_look": lambda s: burst("report_nolook", "decision", s),
        "burst_pad_enforced": lambda s: burst("enforce", "decision", s),
        "stream": lambda s: stream("decision", s),
        "stream_allframes": lambda s: stream("all", s),
        "stream_pad_on": lambda s: stream_pad("decision", s),
        "insightface_get": fa,
        "insightface_get_rewritten": lambda s: fa(s, app_rw),
    }
    samples: dict[str, list[float]] = {m: [] for m in modes}
    session_means: dict[str, list[float]] = {m: [] for m in modes if m.startswith("stream")}
    decisions: dict[str, dict] = {m: {} for m in modes if not m.startswith("insightface_get")}
    for r in range(args.warmup + args.rounds):
        order = list(modes)
        if r % 2:
            order.reverse()
        for subj, _, _ in people:
            for m in order:
                per, d = modes[m](subj)
                if r < args.warmup:
                    continue
                samples[m].extend(per)
                if m in session_means:
                    session_means[m].append(float(np.mean(per)))
                if d is not None:
                    decisions[m].setdefault(subj, {"approved": d.approved, "reasons": list(d.reasons),
                                                   "identity_score": d.identity.get("score")})
        log.info("round %d done", r)
    res: dict = {"benchmark": "latency vs insightface", "date": time.strftime("%Y-%m-%d"), "machine": C.machine(),
                 "core": core, "threads": 1, "subjects": [p[0] for p in people], "rounds": args.rounds,
                 "burst_frames": 4, "stream_clip": [args.stream_neutral, args.stream_smile],
                 "per_frame": {m: _stats(v) for m, v in samples.items() if v},
                 "stream_session_mean_per_frame": {m: _stats(v) for m, v in session_means.items() if v},
                 "decisions": decisions}
    ref = res["per_frame"]["insightface_get"]["median_ms"]
    ref95 = res["per_frame"]["insightface_get"]["p95_ms"]
    res["ratio_to_insightface_median"] = {m: v["median_ms"] / ref for m, v in res["per_frame"].items()}
    res["ratio_to_insightface_p95"] = {m: v["p95_ms"] / ref95 for m, v in res["per_frame"].items()}
    rw = res["per_frame"]["insightface_get_rewritten"]["median_ms"]
    res["ratio_to_insightface_rewritten_median"] = {m: v["median_ms"] / rw for m, v in res["per_frame"].items()}
    res["ratio_stream_session_mean_to_insightface_median"] = {
        m: v["mean_ms"] / ref for m, v in res["stream_session_mean_per_frame"].items()}
    fast_vs_ref = {}
    for fast, slow in (("burst_pad_off", "burst_pad_off_allframes"), ("burst_pad_on", "burst_pad_on_allframes"),
                       ("burst_pad_off_smileonly", "burst_pad_off_allframes"),
                       ("burst_pad_off", "burst_pad_off_norewrite"),
                       ("stream", "stream_allframes")):
        fast_vs_ref[fast] = all(decisions[fast][s]["approved"] == decisions[slow][s]["approved"] and
                                decisions[fast][s]["reasons"] == decisions[slow][s]["reasons"]
                                for s in decisions[fast])
    res["same_decisions_as_reference_path"] = fast_vs_ref
    res["first_look_vs_ladder_same_decisions"] = all(
        decisions["burst_pad_on"][s]["approved"] == decisions["burst_pad_on_no_first_look"][s]["approved"]
        and decisions["burst_pad_on"][s]["reasons"] == decisions["burst_pad_on_no_first_look"][s]["reasons"]
        for s in decisions["burst_pad_on"])
    res["window_vs_whole_frame_decisions"] = {
        s: {"window": decisions["burst_pad_off"][s]["reasons"] or APPROVED,
            "whole_frame": decisions["burst_pad_off_wholeframe"][s]["reasons"] or APPROVED}
        for s in decisions["burst_pad_off"]}
    for s in s2p.values():
        s.close()
    out = Path(args.out)
    C.write_json(out / f"{args.name}.json", res)
    res["json"] = str(out / f"{args.name}.json")
    return res


def summary(res: dict) -> str:
    lines = [f"per frame, 1 thread on core {res['core']}, {res['rounds']} rounds x {len(res['subjects'])} subjects"]
    for m, v in res["per_frame"].items():
        lines.append(f"  {m:26s} median {v['median_ms']:7.2f}  p95 {v['p95_ms']:7.2f} ms  (n={v['n']})  "
                     f"ratio to FaceAnalysis.get: {res['ratio_to_insightface_median'][m]:.2f} median, "
                     f"{res['ratio_to_insightface_p95'][m]:.2f} p95; to the rewritten app "
                     f"{res['ratio_to_insightface_rewritten_median'][m]:.2f}")
    for m, v in res["stream_session_mean_per_frame"].items():
        lines.append(f"  {m:26s} session mean per frame: median {v['median_ms']:.2f} ms "
                     f"(ratio {res['ratio_stream_session_mean_to_insightface_median'][m]:.2f})")
    lines.append(f"same decisions as the all-frames path: {res['same_decisions_as_reference_path']}")
    lines.append(f"decisions, window vs whole frame: {res['window_vs_whole_frame_decisions']}")
    lines.append(f"first look vs ladder, same decisions: {res['first_look_vs_ladder_same_decisions']}")
    lines.append(f"wrote {res['json']}")
    return "\n".join(lines)
