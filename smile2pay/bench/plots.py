"""Plots of the benches (matplotlib, Agg): ROC, DET (normal-deviate axes), score histograms with the
threshold marked, SIDE/SEDI distributions. Each function writes one PNG and returns its path.

Curves are given as ``{label: (scores, labels)}`` or, for precomputed curves, ``{label: ("roc", far, tar)}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def far_tar(c) -> tuple[np.ndarray, np.ndarray]:
    from smile2pay.metrics import roc_curve

    if len(c) == 3 and isinstance(c[0], str) and c[0] == "roc":
        return np.asarray(c[1]), np.asarray(c[2])
    far, tar, _ = roc_curve(c[0], c[1])
    return far, tar


def roc_plot(path: str | Path, curves: dict, title: str, marks: dict | None = None, xmin: float | None = None) -> str:
    """ROC with a log FAR axis. ``marks``: {label: (far, tar)} points to mark (operating points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lo = 1.0
    for label, c in curves.items():
        far, tar = far_tar(c)
        m = far > 0
        if m.any():
            lo = min(lo, float(far[m].min()))
        ax.plot(far[m], tar[m], label=label, drawstyle="steps-post", ls="--" if "all pairs" in label else "-")
    for label, (f, t) in (marks or {}).items():
        if f is not None and t is not None and f > 0:
            ax.plot([f], [t], "o", ms=5, label=label)
    ax.set_xscale("log")
    ax.set_xlim(xmin or max(min(lo, 1e-3) / 2, 1e-7), 1)
    ax.set_xlabel("FAR (impostor pairs accepted)")
    ax.set_ylabel("TAR (genuine pairs accepted)")
    for f in (1e-4, 1e-3, 1e-2):
        ax.axvline(f, color="grey", ls=":", lw=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"ROC: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def det_plot(path: str | Path, curves: dict, title: str) -> str:
    """DET: FRR against FAR, both on normal-deviate (probit) axes, ticks labelled in %."""
    from smile2pay.metrics import probit

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ticks = np.array([1e-5, 1e-4, 1e-3, 1e-2, 5e-2, 0.2, 0.5])
    for label, c in curves.items():
        far, tar = far_tar(c)
        fd, rd = probit(far), probit(1.0 - tar)
        m = np.isfinite(fd) & np.isfinite(rd)
        ax.plot(fd[m], rd[m], label=label, drawstyle="steps-post", ls="--" if "all pairs" in label else "-")
    ax.set_xticks(probit(ticks))
    ax.set_xticklabels([f"{100 * t:g}%" for t in ticks])
    ax.set_yticks(probit(ticks))
    ax.set_yticklabels([f"{100 * t:g}%" for t in ticks])
    lo = probit(5e-6)
    ax.set_xlim(lo, probit(0.5))
    ax.set_ylim(lo, probit(0.5))
    ax.set_xlabel("FAR (normal deviate scale)")
    ax.set_ylabel("FRR (normal deviate scale)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"DET: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def hist_plot(path: str | Path, scores, labels, title: str, thresholds: dict | None = None,
              xlabel: str = "cosine similarity (-1: no face, counted as reject)") -> str:
    """Genuine vs impostor histograms (log counts) with the thresholds marked."""
    plt = _plt()
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(min(-1.05, s.min()), max(1.0, s.max()), 83)
    ax.hist(s[~y], bins=bins, alpha=0.6, label=f"impostor (n={int((~y).sum())})", color="tab:red")
    ax.hist(s[y], bins=bins, alpha=0.6, label=f"genuine (n={int(y.sum())})", color="tab:green")
    styles = ["--", "-.", ":"]
    for k, (name, t) in enumerate((thresholds or {}).items()):
        if t is not None:
            ax.axvline(t, color="k", ls=styles[k % 3], lw=1, label=f"{name} threshold (cos {t:.3f})")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    ax.set_title(f"Score distributions: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def side_sedi_plot(path: str | Path, panels: dict, title: str) -> str:
    """One panel per embedding: density histograms of SIDE and SEDI (and SISE/DIDE faint).
    ``panels``: {panel title: {"side": arr, "sedi": arr, "sise": arr, "dide": arr, "auc": float}}."""
    plt = _plt()
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(5.2 * k, 3.8), squeeze=False)
    bins = np.linspace(-1.0, 1.0, 81)
    colors = {"side": "tab:blue", "sedi": "tab:orange", "sise": "tab:green", "dide": "tab:grey"}
    names = {"side": "SIDE (same id, diff. expr.)", "sedi": "SEDI (same expr., diff. id)",
             "sise": "same id, same expr.", "dide": "diff. id, diff. expr."}
    for ax, (ptitle, d) in zip(axes[0], panels.items()):
        for key in ("dide", "sise", "side", "sedi"):
            a = np.asarray(d.get(key, []))
            if a.size == 0:
                continue
            faint = key in ("sise", "dide")
            ax.hist(a, bins=bins, density=True, histtype="step" if faint else "stepfilled",
                    alpha=0.5 if not faint else 0.9, lw=1, color=colors[key], ls=":" if faint else "-",
                    label=f"{names[key]} n={a.size:,}")
        auc = d.get("auc")
        ax.set_title(f"{ptitle}" + (f"\nAUC(SIDE vs SEDI) = {auc:.3f}" if auc is not None else ""), fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
