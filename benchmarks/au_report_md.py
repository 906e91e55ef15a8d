"""Render results/au_train/cv_report.json (from ``smile2pay train-au --cv 5``) as Markdown tables.

    python benchmarks/au_report_md.py [results/au_train/cv_report.json]
"""
from __future__ import annotations

import json
import sys


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"


def render(rep: dict) -> str:
    out = [f"{rep['folds']}-fold by subject: {rep['n_images']} images, {rep['n_subjects']} subjects, "
           f"{rep['n_neutral']} neutral frames (AU-negative).", ""]
    m = {r["au"]: r for r in rep["model"]["per_au"]}
    t = {r["au"]: r for r in rep["teacher"]["per_au"]}
    c = {r["au"]: r for r in rep["combined"]["per_au"]}
    out += ["| AU | pos | neg | model F1 | model AUC | teacher F1 | teacher AUC | combined F1 | combined AUC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for au, r in m.items():
        tr, cr = t.get(au, {}), c.get(au, {})
        out.append(f"| {au} | {r['n_pos']} | {r['n_neg']} | {_f(r['f1'])} | {_f(r['auc'])} | {_f(tr.get('f1'))} | "
                   f"{_f(tr.get('auc'))} | {_f(cr.get('f1'))} | {_f(cr.get('auc'))} |")
    d = rep["model"]["duchenne"]
    out += ["", "Duchenne gate (AU6 and AU12 present) vs everything else, neutral frames included, score = min(p6, p12):",
            "", "| backend | pos | neg | ROC AUC |", "|---|---:|---:|---:|",
            f"| model | {d['n_pos']} | {d['n_neg']} | {_f(d['auc'])} |",
            f"| teacher (calibrated per fold) | {d['n_pos']} | {d['n_neg']} | {_f(rep['teacher']['duchenne']['auc'])} |",
            f"| teacher (raw blendshapes) | {d['n_pos']} | {d['n_neg']} | "
            f"{_f(rep['teacher']['duchenne_raw_min']['auc'])} |",
            f"| combined (mean of model and calibrated teacher) | {d['n_pos']} | {d['n_neg']} | "
            f"{_f(rep['combined']['duchenne']['auc'])} |", ""]
    out += ["SIDE/SEDI cosine (pairs within each held-out fold):", "",
            "| embedding | pairs | SEDI n | SEDI mean ± sd | SEDI median [p05, p95] | SIDE n | SIDE mean ± sd | "
            "SIDE median [p05, p95] | AUC(SEDI > SIDE) |", "|---|---|---:|---|---|---:|---|---|---:|"]
    for name, r in rep["side_sedi"].items():
        e, i = r["SEDI"], r["SIDE"]
        emb = name.replace("_expressive_only", "")
        pairs = "no neutral frame" if name.endswith("expressive_only") else "all"
        out.append(f"| {emb} | {pairs} | {e['n']} | {e['mean']:.3f} ± {e['std']:.3f} | {e['median']:.3f} "
                   f"[{e['p05']:.3f}, {e['p95']:.3f}] | {i['n']} | {i['mean']:.3f} ± {i['std']:.3f} | "
                   f"{i['median']:.3f} [{i['p05']:.3f}, {i['p95']:.3f}] | {r['auc_sedi_over_side']:.3f} |")
    if "fold_seconds" in rep:
        out += ["", "Fold training wall times (s): " + ", ".join(f"{k}: {v}" for k, v in rep["fold_seconds"].items())]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "results/au_train/cv_report.json"
    sys.stdout.write(render(json.load(open(path))))
