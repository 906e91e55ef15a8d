"""Metrics for the AU model and the blendshape teacher on subject-held-out folds.

* per-AU F1 (threshold 0.5 for the model: its probabilities are trained, not tuned on test;
  for the teacher, the F1-optimal threshold of its calibrated score on the *training* folds) and ROC AUC,
  with positive/negative counts;
* Duchenne gate (AU6 and AU12) vs everything else, neutral frames included: ROC AUC of
  ``min(p6, p12)``;
* SIDE / SEDI cosine distributions of an embedding: pairs within one fold's held-out subjects
  (each fold's model has its own embedding space), SEDI = same AU combination + different subject,
  SIDE = same subject + different AU combination.
"""
from __future__ import annotations

import numpy as np


def _auc(y, s):
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def f1_at(y, s, thr):
    pred = np.asarray(s) >= thr
    y = np.asarray(y).astype(bool)
    tp = float((pred & y).sum())
    fp = float((pred & ~y).sum())
    fn = float((~pred & y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return f1, prec, rec


def best_threshold(y, s):
    cands = np.unique(np.quantile(s, np.linspace(0.01, 0.99, 99)))
    best = max(cands, key=lambda t: f1_at(y, s, t)[0])
    return float(best)


def per_au(y: np.ndarray, scores: np.ndarray, names, thresholds) -> list[dict]:
    rows = []
    for j, n in enumerate(names):
        s = scores[:, j]
        if np.isnan(s).all():
            continue
        thr = thresholds[j] if np.ndim(thresholds) else thresholds
        f1, p, r = f1_at(y[:, j], s, thr)
        auc = _auc(y[:, j], s)
        rows.append({"au": n, "n_pos": int(y[:, j].sum()), "n_neg": int(len(y) - y[:, j].sum()),
                     "f1": round(f1, 4), "precision": round(p, 4), "recall": round(r, 4),
                     "auc": None if auc is None else round(auc, 4), "threshold": round(float(thr), 4)})
    return rows


def duchenne(y: np.ndarray, scores: np.ndarray, names) -> dict:
    j6, j12 = list(names).index("AU6"), list(names).index("AU12")
    pos = (y[:, j6] > 0) & (y[:, j12] > 0)
    s = np.minimum(scores[:, j6], scores[:, j12])
    f1, p, r = f1_at(pos, s, 0.5)
    return {"n_pos": int(pos.sum()), "n_neg": int((~pos).sum()), "auc": round(_auc(pos, s), 4),
            "f1_at_0.5": round(f1, 4)}


def teacher_oof(bs: np.ndarray, y: np.ndarray, fold: np.ndarray, names, min_auc: float = 0.85):
    """Calibrated teacher scores per fold (calibration on the other folds), per-fold F1 thresholds, and
    the per-fold mask of AUs whose teacher AUC on the training folds reaches ``min_auc`` (the AUs the
    teacher pseudo-labels and the ``both`` backend averages)."""
    from .au_train import apply_calibration, calibrate_teacher

    scores = np.full(y.shape, np.nan, np.float32)
    thr = np.full(y.shape, np.nan, np.float32)
    strong = np.zeros(y.shape, bool)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        cal = calibrate_teacher(bs[tr], y[tr], names)
        s_tr = apply_calibration(bs[tr], cal, names)
        scores[te] = apply_calibration(bs[te], cal, names)
        for j, n in enumerate(names):
            strong[te, j] = n in cal and cal[n][2] >= min_auc
        for j in range(y.shape[1]):
            if not np.isnan(s_tr[:, j]).all():
                thr[te, j] = best_threshold(y[tr, j], s_tr[:, j])
    return scores, thr, strong


def per_au_foldthr(y, scores, thr_rows, names) -> list[dict]:
    """Like :func:`per_au` with a per-sample threshold (each fold's own, fitted on its training folds)."""
    rows = []
    for j, n in enumerate(names):
        s = scores[:, j]
        if np.isnan(s).all():
            continue
        pred = s >= thr_rows[:, j]
        yy = y[:, j] > 0
        tp, fp, fn = (pred & yy).sum(), (pred & ~yy).sum(), (~pred & yy).sum()
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        auc = _auc(yy, s)
        rows.append({"au": n, "n_pos": int(yy.sum()), "n_neg": int((~yy).sum()), "f1": round(float(f1), 4),
                     "precision": round(float(prec), 4), "recall": round(float(rec), 4),
                     "auc": None if auc is None else round(auc, 4)})
    return rows


def _stats(v: np.ndarray) -> dict:
    v = np.asarray(v, np.float64)
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
            "p05": round(q[0], 4), "p25": round(q[1], 4), "median": round(q[2], 4), "p75": round(q[3], 4),
            "p95": round(q[4], 4)}


def side_sedi(embs: np.ndarray, subject: np.ndarray, keys: np.ndarray, fold: np.ndarray,
              max_pairs: int = 20000, seed: int = 0, expressive_only: bool = False) -> dict:
    """Cosine similarity of SEDI (same expression, different identity) and SIDE (same identity,
    different expression) pairs, within each fold."""
    rng = np.random.RandomState(seed)
    sedi, side = [], []
    for f in np.unique(fold):
        idx = np.flatnonzero(fold == f)
        e = embs[idx] / np.maximum(np.linalg.norm(embs[idx], axis=1, keepdims=True), 1e-12)
        sim = e @ e.T
        su, ke = subject[idx], keys[idx]
        same_s = su[:, None] == su[None, :]
        same_k = ke[:, None] == ke[None, :]
        iu = np.triu_indices(len(idx), 1)
        m_sedi = (same_k & ~same_s)[iu]
        m_side = (same_s & ~same_k)[iu]
        if expressive_only:  # no AU-less (neutral) frame in either kind of pair
            nonempty = (ke != "")
            both = (nonempty[:, None] & nonempty[None, :])[iu]
            m_sedi &= both
            m_side &= both
        sedi.append(sim[iu][m_sedi])
        side.append(sim[iu][m_side])
    sedi, side = np.concatenate(sedi), np.concatenate(side)
    if len(sedi) > max_pairs:
        sedi = rng.choice(sedi, max_pairs, replace=False)
    if len(side) > max_pairs:
        side = rng.choice(side, max_pairs, replace=False)
    y = np.r_[np.ones(len(sedi)), np.zeros(len(side))]
    return {"SEDI": _stats(sedi), "SIDE": _stats(side), "auc_sedi_over_side": round(_auc(y, np.r_[sedi, side]), 4)}


def cv_report(ck: dict, cv: dict, aus, names) -> dict:
    """Everything the model card reports, from out-of-fold predictions ``cv`` (see cross_validate)."""
    from .au_train import au_matrix, combo_keys

    y = au_matrix(ck["aus"], aus)
    fold = cv["fold"]
    rep: dict = {"n_images": int(len(y)), "n_subjects": int(len(set(ck["subject"]))),
                 "n_neutral": int(ck["neutral"].sum()), "folds": int(len(np.unique(fold)))}
    rep["model"] = {"per_au": per_au(y, cv["probs"], names, 0.5), "duchenne": duchenne(y, cv["probs"], names)}
    t_scores, t_thr, strong = teacher_oof(ck["blendshapes"], y, fold, names)
    rep["teacher"] = {"per_au": per_au_foldthr(y, t_scores, t_thr, names), "duchenne": duchenne(y, t_scores, names)}
    # raw (uncalibrated) teacher Duchenne score, for reference
    from smile2pay.vision.au import blendshapes_to_au_array

    raw = blendshapes_to_au_array(ck["blendshapes"], names)
    rep["teacher"]["duchenne_raw_min"] = duchenne(y, raw, names)
    # combined (au_backend="both"): mean of model and calibrated teacher for the AUs the teacher is
    # strong on (AUC >= 0.85 on the training folds, the pseudo-label rule), the model alone elsewhere
    comb = np.where(strong, 0.5 * (cv["probs"] + np.nan_to_num(t_scores)), cv["probs"])
    rep["combined"] = {"per_au": per_au(y, comb, names, 0.5), "duchenne": duchenne(y, comb, names)}
    # supplementary: CK+ codes contempt's one-sided lip corner pull as AU12 (often R12/L12 + AU14); without
    # the contempt sequences AU12 is the bilateral smile the payment gate is about
    nc = np.array([str(lab) != "contempt" for lab in ck["label"]])
    j12 = list(names).index("AU12")
    rep["without_contempt"] = {
        "n_images": int(nc.sum()),
        "model_AU12": per_au(y[nc][:, [j12]], cv["probs"][nc][:, [j12]], ["AU12"], 0.5)[0],
        "teacher_AU12": per_au_foldthr(y[nc][:, [j12]], t_scores[nc][:, [j12]], t_thr[nc][:, [j12]], ["AU12"])[0],
        "combined_AU12": per_au(y[nc][:, [j12]], comb[nc][:, [j12]], ["AU12"], 0.5)[0],
        "model_duchenne": duchenne(y[nc], cv["probs"][nc], names),
        "teacher_duchenne": duchenne(y[nc], t_scores[nc], names),
    }
    keys = np.array(combo_keys(y, aus))
    rep["side_sedi"] = {"au_embedding": side_sedi(cv["embs"], ck["subject"], keys, fold),
                        "au_embedding_expressive_only": side_sedi(cv["embs"], ck["subject"], keys, fold,
                                                                  expressive_only=True)}
    if "identity" in ck:
        ide = ck["identity"].astype(np.float32)
        rep["side_sedi"]["identity_embedding"] = side_sedi(ide, ck["subject"], keys, fold)
        rep["side_sedi"]["identity_embedding_expressive_only"] = side_sedi(ide, ck["subject"], keys, fold,
                                                                           expressive_only=True)
    return rep
