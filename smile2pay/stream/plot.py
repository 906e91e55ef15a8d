"""Timeline PNG of a recorded stream session (``smile2pay replay``; needs matplotlib, the ``viz`` extra).

Imported lazily (``from smile2pay.stream import render_timeline`` loads it on first use): the runtime
modules of a stream never import matplotlib.
"""
from __future__ import annotations

import numpy as np

from ..errors import RequestError
from ..reasons import APPROVED, DECLINED
from .session import RECORD_FORMAT


def render_timeline(record: dict, out_png, title: str | None = None):
    """Timeline PNG of a recorded session: smoothed AU probabilities of the rule's AUs and the
    identity score over stream time, with their thresholds, state changes and the decision marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if record.get("format") != RECORD_FORMAT:
        raise RequestError(f"not a stream recording (format {RECORD_FORMAT})", code="REQUEST_INVALID")
    frames = record.get("frames") or []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ts = [f["t"] for f in frames]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, (au, thr) in enumerate(sorted((record.get("thresholds") or {}).items())):
        c = colours[i % len(colours)]
        xs = [f["t"] for f in frames if f.get("au")]
        ys = [f["au"].get(au, np.nan) for f in frames if f.get("au")]
        ax1.plot(xs, ys, "-o", ms=2.5, color=c, label=f"{au} (smoothed)")
        xr = [f["t"] for f in frames if f.get("au_raw")]
        yr = [f["au_raw"].get(au, np.nan) for f in frames if f.get("au_raw")]
        ax1.plot(xr, yr, ":", lw=0.8, color=c, alpha=0.6, label=f"{au} (raw)")
        ax1.axhline(thr, color=c, ls="--", lw=0.8)
        ab = (record.get("absent_thresholds") or {}).get(au)
        if ab is not None:
            ax1.axhline(ab, color=c, ls="-.", lw=0.6, alpha=0.6)
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_ylabel("AU probability")
    ax1.legend(loc="center left", fontsize=7, ncol=2, framealpha=0.8)
    xi = [f["t"] for f in frames if f.get("identity_score") is not None]
    yi = [f["identity_score"] for f in frames if f.get("identity_score") is not None]
    ax2.plot(xi, yi, "-o", ms=2.5, color="tab:purple", label="identity score")
    ax2.axhline(record.get("identity_threshold", 0.0), color="tab:purple", ls="--", lw=0.8, label="threshold")
    ax2.set_ylabel("identity (cosine)")
    ax2.set_xlabel("stream time (s)")
    ax2.legend(loc="lower left", fontsize=7)
    prev = None
    for f in frames:
        if f["state"] != prev and prev is not None:
            for ax in (ax1, ax2):
                ax.axvline(f["t"], color="grey", lw=0.6, alpha=0.7)
            ax1.text(f["t"], 1.0, f["state"], fontsize=6, rotation=90, va="top", ha="right", color="grey")
        prev = f["state"]
    dec = record.get("decision")
    if dec:
        ok = dec.get("approved")
        label = APPROVED if ok else f"{DECLINED} " + ",".join(dec.get("reasons") or [])
        tend = ts[-1] if ts else 0.0
        for ax in (ax1, ax2):
            ax.axvline(tend, color="green" if ok else "red", lw=1.5)
        ax2.text(tend, ax2.get_ylim()[1], label + " ", fontsize=8, color="green" if ok else "red", ha="right",
                 va="top", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    fig.suptitle(title or f"stream session: {record.get('user_id')} ({record.get('rule')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
