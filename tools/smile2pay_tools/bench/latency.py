"""``smile2pay bench latency``: per-stage latency (median / p95) of one verify frame on 1 and 2 threads.

Stages (decode, detect, align + quality, embed, AU, analyze total, and the models' bare forwards) are
timed by :func:`smile2pay_tools.perf.stage_latency`; detection-size ladders are compared as ratios within the
same run (machines are noisy). Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from . import common as C

log = logging.getLogger("smile2pay_tools.bench.latency")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frame", help="a camera-like frame with one large face (default: samples/deepface/img2.jpg "
                                   "of the data folder)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2], help="onnxruntime threads (default 1 2)")
    p.add_argument("--ladder", type=int, nargs="*", default=[160, 192, 256, 320, 640],
                   help="detection sizes to compare (1 thread); empty to skip")
    p.add_argument("--out", default="bench_out/latency")
    p.add_argument("--plots-dir")
    p.add_argument("--name", default="bench_latency")
    p.add_argument("--no-plots", action="store_true")


def run(args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay.errors import RequestError
    from smile2pay_tools.perf import stage_latency, time_call

    frame = args.frame or str(data_dir() / "samples" / "deepface" / "img2.jpg")
    if not Path(frame).is_file():
        raise RequestError(f"frame not found: {frame}", code="IMAGE_NOT_FOUND")
    models = getattr(args, "models", None)
    res: dict = {"benchmark": "bench latency", "date": time.strftime("%Y-%m-%d"), "machine": C.machine(),
                 "frame_file": Path(frame).name, "runs": args.runs, "by_threads": {}}
    pipes = {}
    for t in args.thread_counts:
        pipes[t] = C.make_pipeline(models, threads=t)
        log.info("latency: %d thread(s)", t)
        res["by_threads"][str(t)] = stage_latency(pipes[t], frame, runs=args.runs, warmup=args.warmup)
    res["settings"] = C.settings_summary(next(iter(pipes.values())))
    first = str(args.thread_counts[0])
    res["one_thread"] = res["by_threads"].get("1", res["by_threads"][first])
    tot = {k: v["stages"]["analyze_total"] for k, v in res["by_threads"].items()}
    res["threads"] = dict(tot)
    if "1" in tot and "2" in tot:
        res["threads"]["ratio_2_over_1"] = tot["2"]["median_ms"] / tot["1"]["median_ms"]
    if args.ladder:
        base_pipe = pipes.get(1) or next(iter(pipes.values()))
        img = base_pipe.load(frame)
        ladders = {}
        for size in args.ladder:
            p = C.make_pipeline(models, threads=1, det_sizes=(size,))
            found = len(p.detect(img))
            ladders[str(size)] = {"faces": found, **time_call(lambda: p.detect(img), args.runs, args.warmup)}
        ref = ladders.get("320") or next(iter(ladders.values()))
        for v in ladders.values():
            v["ratio_to_ref"] = v["median_ms"] / ref["median_ms"]
        res["detect_by_size"] = ladders
    out = Path(args.out)
    plots = []
    if not args.no_plots:
        plots = [_plot(Path(args.plots_dir or out), args.name, res)]
        res["plots"] = plots
    from .report import write_reports

    stages = list(res["one_thread"]["stages"])
    head = ["stage"] + [f"{t} thr median ms" for t in res["by_threads"]] + [f"{t} thr p95 ms" for t in res["by_threads"]]
    rows = [[s] + [res["by_threads"][t]["stages"][s]["median_ms"] for t in res["by_threads"]]
            + [res["by_threads"][t]["stages"][s]["p95_ms"] for t in res["by_threads"]] for s in stages]
    res["reports"] = write_reports(out, args.name, "Latency per stage", {
        "date": res["date"], "frame": res["frame_file"], "runs": args.runs, "cpus": res["machine"]["cpu_count"]},
        [("Per stage", head, rows)], plots, ["timings vary between runs and machines; compare ratios within a run"])
    C.write_json(out / f"{args.name}.json", res)
    res["json"] = str(out / f"{args.name}.json")
    return res


def _plot(pdir: Path, name: str, res: dict) -> str:
    """Stacked per-stage latency: each thread count's ``analyze`` total as one bar, its stages stacked
    inside it (each model stage split into the bare forward pass and its pre/post-processing, the
    unaccounted rest shown as "other"), the total's p95 as a whisker; decode (before analyze) apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pdir.mkdir(parents=True, exist_ok=True)
    threads = list(res["by_threads"])
    parts = [("detect", "detect_forward", "tab:blue"), ("align_quality", None, "tab:purple"),
             ("embed", "embed_forward", "tab:orange"), ("au", "au_forward", "tab:green")]
    labels = {"detect": "detect", "align_quality": "align + quality", "embed": "embed (identity)", "au": "AU"}
    fig, ax = plt.subplots(figsize=(9, 1.6 + 1.1 * len(threads) + 1.2))
    rows = []
    for t in threads:
        rows += [(f"decode\n{t} thread(s)", t, "decode"), (f"analyze()\n{t} thread(s)", t, "analyze")]
    y = np.arange(len(rows))[::-1]
    seen = set()

    def seg(yy, left, width, color, label, hatch=None, alpha=1.0):
        lab = label if label not in seen else None
        seen.add(label)
        ax.barh(yy, width, left=left, color=color, alpha=alpha, hatch=hatch, edgecolor="white", lw=0.6,
                height=0.6, label=lab)
        return left + width

    xmax = 0.0
    for yy, (_, t, kind) in zip(y, rows):
        st = res["by_threads"][t]["stages"]
        med = lambda s: float(st[s]["median_ms"]) if s in st else 0.0   # noqa: E731
        if kind == "decode":
            end = seg(yy, 0.0, med("decode"), "tab:grey", "decode (file -> image, before analyze)")
            ax.text(end, yy, f" {end:.1f} ms", va="center", fontsize=8)
            continue
        left = 0.0
        for stage, fwd, color in parts:
            total = med(stage)
            f = min(med(fwd), total) if fwd else 0.0
            if fwd:
                left = seg(yy, left, f, color, f"{labels[stage]}: model forward")
                left = seg(yy, left, total - f, color, f"{labels[stage]}: pre/post-processing", hatch="//", alpha=0.45)
            else:
                left = seg(yy, left, total, color, labels[stage], alpha=0.8)
        tot = med("analyze_total")
        if tot > left:
            seg(yy, left, tot - left, "lightgrey", "other (not in a stage)")
        p95 = float(st["analyze_total"]["p95_ms"])
        ax.errorbar([tot], [yy], xerr=[[0], [max(0.0, p95 - tot)]], fmt="none", ecolor="k", capsize=3, lw=0.9)
        ax.text(max(p95, left) + 0.3, yy, f"total {tot:.1f} ms (p95 {p95:.1f})", va="center", fontsize=8)
        xmax = max(xmax, p95, left)
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xlim(0, xmax * 1.3 if xmax else 1)
    ax.set_xlabel("ms per frame (median; stages stacked inside their total; whisker: p95 of the total)")
    ax.set_title(f"Per-stage latency of one verify frame, {res['frame_file']}, "
                 f"{res['machine']['cpu_count']} CPUs", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17),
              ncol=3, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = pdir / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def summary(res: dict) -> str:
    lines = [f"latency on {res['frame_file']} ({res['runs']} runs)"]
    stages = list(res["one_thread"]["stages"])
    for s in stages:
        parts = [f"{t} thr {r['stages'][s]['median_ms']:7.2f} / p95 {r['stages'][s]['p95_ms']:7.2f} ms"
                 for t, r in res["by_threads"].items()]
        lines.append(f"  {s:16s} " + "   ".join(parts))
    lines.append(f"wrote {res['json']}")
    return "\n".join(lines)
