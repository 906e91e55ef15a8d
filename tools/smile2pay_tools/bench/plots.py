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


def roc_plot(path: str | Path, curves: dict, title: str, marks: dict | None = None, xmin: float | None = None,
             ymin: float | None = None) -> str:
    """ROC with a log FAR axis and a TAR axis zoomed on where the curves are (``ymin``, default: the
    lowest TAR shown rounded down to 0.05, at most 0.9), so that curves near TAR 1 stay apart.
    ``marks``: {label: (far, tar)} points to mark (operating points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    lo, tar_lo = 1.0, 1.0
    data = []
    for label, c in curves.items():
        far, tar = far_tar(c)
        m = far > 0
        if m.any():
            lo = min(lo, float(far[m].min()))
        data.append((label, far[m], tar[m]))
    x0 = xmin or max(min(lo, 1e-3) / 2, 1e-7)
    for label, far, tar in data:
        ax.plot(far, tar, label=label, drawstyle="steps-post", ls="--" if "all pairs" in label else "-")
        if far.size:
            # the lowest TAR drawn inside the FAR range (a step curve holds its value from the last point before x0)
            i = max(0, int(np.searchsorted(far, x0, side="right")) - 1)
            tar_lo = min(tar_lo, float(tar[i:].min()))
    for label, (f, t) in (marks or {}).items():
        if f is not None and t is not None and f > 0:
            ax.plot([f], [t], "o", ms=5, label=label)
            tar_lo = min(tar_lo, float(t))
    y0 = ymin if ymin is not None else min(0.9, np.floor(tar_lo * 20) / 20)
    ax.set_xscale("log")
    ax.set_xlim(x0, 1)
    ax.set_ylim(y0, 1.0 + (1.0 - y0) * 0.02)
    ax.set_xlabel("FAR: impostor pairs accepted (log scale)")
    ax.set_ylabel(f"TAR: genuine pairs accepted (axis from {y0:g})")
    for f in (1e-4, 1e-3, 1e-2):
        ax.axvline(f, color="grey", ls=":", lw=0.8)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"ROC: {title}\n(TAR axis zoomed to {y0:g}-1; up and left is better)", fontsize=9)
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
    """One panel per embedding: density histograms of SIDE and SEDI (and SISE/DIDE faint), one legend
    under the panels, and each panel's AUC said in words: for an identity embedding, the probability
    that a SIDE pair (same person, other expression) scores closer than a SEDI pair (same expression,
    other person) -- 1 means expression does not move identity; for an AU/expression embedding (a
    panel title with "AU" or "expression"), the reverse -- 1 means it follows expression, not identity.
    ``panels``: {panel title: {"side": arr, "sedi": arr, "sise": arr, "dide": arr, "auc": float}} where
    ``auc`` is AUC(SIDE scores above SEDI) as the bench computes it."""
    plt = _plt()
    k = len(panels)
    ncol = min(k, 2)
    nrow = (k + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.2 * ncol, 4.8 * nrow + 0.9), squeeze=False)
    bins = np.linspace(-1.0, 1.0, 81)
    colors = {"side": "tab:blue", "sedi": "tab:orange", "sise": "tab:green", "dide": "tab:grey"}
    names = {"side": "SIDE: same person, different expression", "sedi": "SEDI: same expression, different person",
             "sise": "same person, same expression", "dide": "different person, different expression"}
    handles = {}
    for ax, (ptitle, d) in zip(axes.flat, panels.items()):
        for key in ("dide", "sise", "side", "sedi"):
            a = np.asarray(d.get(key, []))
            if a.size == 0:
                continue
            faint = key in ("sise", "dide")
            _, _, patches = ax.hist(a, bins=bins, density=True, histtype="step" if faint else "stepfilled",
                                    alpha=0.5 if not faint else 0.9, lw=1.2, color=colors[key],
                                    ls=":" if faint else "-")
            handles.setdefault(key, patches[0])
            ax.axvline(float(np.median(a)), color=colors[key], lw=1, ls="--" if not faint else ":", alpha=0.9)
        auc = d.get("auc")
        expr = "AU" in ptitle or "expression" in ptitle.lower()
        if auc is None:
            sub = ""
        elif expr:
            sub = (f"\nP(a SEDI pair scores closer than a SIDE pair) = {1.0 - auc:.3f}"
                   "\n(1: the embedding follows expression, not identity; 0.5: no separation)")
        else:
            sub = (f"\nP(a SIDE pair scores closer than a SEDI pair) = {auc:.3f}"
                   "\n(1: identity unaffected by expression; 0.5: no separation)")
        ax.set_title(f"{ptitle}{sub}", fontsize=10)
        ax.set_xlabel("cosine similarity of the pair (dashed: medians)", fontsize=9)
        ax.set_ylabel("density (log scale)", fontsize=9)
        ax.set_yscale("log")       # the same-expression pairs pile up near 1: a log axis keeps the rest visible
        ax.set_ylim(bottom=1e-3)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    order = [key for key in ("side", "sedi", "sise", "dide") if key in handles]
    counts = {}
    for key in order:
        ns = {int(np.asarray(d.get(key, [])).size) for d in panels.values()}
        counts[key] = f" (n={next(iter(ns)):,})" if len(ns) == 1 else ""
    fig.legend([handles[key] for key in order], [names[key] + counts[key] for key in order],
               loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.75 / (4.8 * nrow + 0.9), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
