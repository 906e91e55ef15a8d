"""``smile2pay train-au``: cache -> (k-fold CV report) -> final model on everything -> ONNX export + check."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _subset(d: dict, idx) -> dict:
    return {k: v[idx] for k, v in d.items()}


def load_or_build_caches(data_dir, models_dir, cache_dir, lfw_n: int, extra_csv=(), ckplus_original=None,
                         limit: int = 0, progress: bool = True):
    """Ground-truth cache (CK+48 + neutral/peak + any user manifests) and pseudo-label cache (LFW)."""
    import csv
    import random

    from smile2pay.config import Settings
    from ..datasets import AUSample, load_ckplus_all, load_ckplus_original, load_csv_manifest
    from smile2pay.pipeline import FacePipeline
    from .cache import build_cache, load_cache, make_teacher

    cache_dir = Path(cache_dir)
    tag = f"_limit{limit}" if limit else ""
    gt_path, lfw_path = cache_dir / f"gt{tag}.npz", cache_dir / f"lfw{lfw_n}{tag}.npz"
    pipe = teacher = None

    def tools():
        nonlocal pipe, teacher
        if pipe is None:
            pipe = FacePipeline(Settings.from_env(models=str(models_dir)))
            teacher = make_teacher(models_dir)
        return pipe, teacher

    if not gt_path.is_file():
        samples = load_ckplus_all(data_dir)
        if ckplus_original:
            samples += load_ckplus_original(ckplus_original)
        for c in extra_csv:
            samples += load_csv_manifest(c)
        if limit:
            samples = random.Random(0).sample(samples, min(limit, len(samples)))
        build_cache(samples, gt_path, *tools(), identity=True, progress=progress)
    lfw = None
    if lfw_n > 0:
        if not lfw_path.is_file():
            rows = list(csv.DictReader(open(Path(data_dir) / "lfw" / "manifest.csv", encoding="utf-8")))
            random.Random(0).shuffle(rows)
            rows = rows[:lfw_n]
            s = [AUSample(str(Path(data_dir) / r["path"]), r["subject"], frozenset(), "lfw", "", r["label"])
                 for r in rows]
            build_cache(s, lfw_path, *tools(), identity=False, progress=progress)
        lfw = load_cache(lfw_path)
    return load_cache(gt_path), lfw


def torch_onnx_max_diff(net, onnx_path, crops: np.ndarray, size: int) -> float:
    """Max |torch - onnxruntime| over both outputs on the given (real) crops, through the runtime
    preprocessing of :class:`smile2pay.vision.au.AUModel`."""
    import torch

    from smile2pay.models.manifest import ModelSpec
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.au import AUModel
    from .model import ExportWrapper

    spec = ModelSpec(name="au", file=str(onnx_path), task="au", sha256=None, size=None, licence="", source="",
                     input_size=(size, size))
    m = AUModel(spec, create_session(onnx_path, name="au")[0])
    p_onnx, e_onnx = m.run(list(crops))
    with torch.no_grad():
        p_t, e_t = ExportWrapper(net).eval()(torch.from_numpy(m.preprocess(list(crops))))
    return float(max(np.abs(p_onnx - p_t.numpy()).max(), np.abs(e_onnx - e_t.numpy()).max()))


def run(data_dir, models_dir, out_dir, *, cv: int = 0, lfw_n: int = 4000, smoke: bool = False,
        resume: bool = True, export: str | None = None, extra_csv=(), ckplus_original=None, folds=None,
        skip_final: bool = False, progress: bool = True, **overrides) -> dict:
    from .au_eval import cv_report
    from .au_train import TrainConfig, au_names, build_trainset, cross_validate, export_onnx, train_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig()
    if smoke:
        cfg = dataclasses.replace(cfg, input_size=32, width=8, emb_dim=16, epochs=1, batch=16, min_class=3,
                                  pseudo_per_epoch=16, limit=48)
        lfw_n = min(lfw_n, 16)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    t_all = time.time()
    ck, lfw = load_or_build_caches(data_dir, models_dir, out / "cache", lfw_n, extra_csv, ckplus_original,
                                   limit=cfg.limit, progress=progress)
    summary: dict = {"config": cfg.to_dict(), "n_gt": int(len(ck["crops"])),
                     "n_pseudo": int(0 if lfw is None else len(lfw["crops"])),
                     "cache_seconds": round(time.time() - t_all, 1)}
    names = au_names(cfg.aus)
    if cv:
        t0 = time.time()
        res = cross_validate(ck, lfw, cfg, k=cv, out_dir=out / "cv", folds_to_run=folds, progress=progress)
        summary["cv_seconds"] = round(time.time() - t0, 1)
        if folds is None or len(folds) == cv:
            rep = cv_report(ck, res, cfg.aus, names)
            rep["fold_seconds"] = res["seconds"]
            (out / "cv_report.json").write_text(json.dumps(rep, indent=1))
            summary["cv_report"] = str(out / "cv_report.json")
    if skip_final:
        return summary
    t0 = time.time()
    ts = build_trainset(ck, np.ones(len(ck["crops"]), bool), lfw, cfg, holdout_val=False)
    net, hist = train_model(ts, cfg, out / "final", resume=resume, progress=progress)
    summary["final_train_seconds"] = round(time.time() - t0, 1)
    summary["final_trainset"] = ts.info
    summary["final_history"] = hist[-3:]
    path = Path(export) if export else out / "au_mobile.onnx"
    export_onnx(net, path, cfg, metadata={"classes": ts.class_keys, "trainset": {k: ts.info[k] for k in (
        "n_gt", "n_pseudo", "classes", "pseudo_aus")}, "teacher_calibration": ts.info["calibration"]})
    summary["onnx"] = str(path)
    summary["onnx_bytes"] = path.stat().st_size
    summary["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    summary["onnx_vs_torch_max_abs_diff"] = torch_onnx_max_diff(net, path, ck["crops"][:32], cfg.input_size)
    summary["total_seconds"] = round(time.time() - t_all, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def report_from_folds(data_dir, models_dir, out_dir, k: int = 5, lfw_n: int = 4000) -> dict:
    """Rebuild the k-fold report from the per-fold out-of-fold files (folds run by several workers)."""
    from .au_eval import cv_report
    from .au_train import TrainConfig, au_names
    from ..datasets import subject_folds

    out = Path(out_dir)
    cfg = TrainConfig()
    ck, _ = load_or_build_caches(data_dir, models_dir, out / "cache", 0, progress=False)
    fold_of = subject_folds(ck["subject"], k=k, seed=cfg.seed)
    fold = np.array([fold_of[s] for s in ck["subject"]])
    probs = np.full((len(fold), len(cfg.aus)), np.nan, np.float32)
    embs = None
    seconds = {}
    for f in range(k):
        z = np.load(out / "cv" / f"fold{f}" / "oof.npz")
        if not np.array_equal(np.sort(z["idx"]), np.flatnonzero(fold == f)):
            raise RuntimeError(f"fold {f}: its held-out set does not match this cache's subject split")
        if embs is None:
            embs = np.zeros((len(fold), z["embs"].shape[1]), np.float32)
        probs[z["idx"]], embs[z["idx"]] = z["probs"], z["embs"]
        seconds[f] = json.loads((out / "cv" / f"fold{f}" / "info.json").read_text())["seconds"]
    rep = cv_report(ck, {"fold": fold, "probs": probs, "embs": embs}, cfg.aus, au_names(cfg.aus))
    rep["fold_seconds"] = seconds
    (out / "cv_report.json").write_text(json.dumps(rep, indent=1))
    return rep
