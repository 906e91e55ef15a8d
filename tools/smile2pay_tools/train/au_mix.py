"""AU model v3: CK+ ground truth + in-the-wild breadth (FER+, LFW), two stages, reproducible on a 2-core CPU.

Why (issue 14): v2 learned from 123 lab subjects at 48 px; on other populations its smile score
min(AU6, AU12) ranks smiles at AUC 0.86-0.93. The limit was data breadth, so v3 adds:

* **FER+** (FER2013 faces, ten-annotator votes): the happiness vote share is a soft target for AU6 and
  AU12 (a happiness prototype is AU6+AU12 in FACS); other emotions are hard negatives for the smile;
  a clear neutral majority is AU-negative for every AU. Only training splits, minus every image that
  is pixel-identical to a test image (:func:`~smile2pay_tools.train.sources.dedup_train_mask`).
* **LFW** (training quarter of the people only, :func:`~smile2pay_tools.train.sources.lfw_role`): the crowd
  expression label (muxspace) and the Morishita smile label as AU6/AU12 targets at a lower weight.
* **Teacher pseudo-labels** (stage 2): the MediaPipe blendshape proxies on every FER+ and LFW training
  face for the other AUs, Platt-calibrated on the CK+ training subjects, each AU weighted by the
  teacher's agreement with CK+ ground truth there: ``pseudo_weight * (2 * AUC - 1) ** 2`` (0 at chance),
  only where AUC >= ``pseudo_min_auc``.
* **CK+** codes stay the only ground truth of the per-AU heads, and the only source of the
  AU-combination classes of the ArcFace (m=0.3, s=64) + focal (alpha 0.5, gamma 2) AU embedding.

Stages:

1. ``base``: FER+ and LFW-train human labels only (no CK+, no CK+-calibrated teacher), so a base never
   saw a CK+ subject and every CK+ fold may start from it;
2. ``fine``: from the base, CK+ (the fold's training subjects, or all for the shipped model) + the
   same FER+/LFW labels + teacher pseudo-labels, ArcFace head on.

Inputs are turned grey inside the network (``AUNet(grey=True)``): CK+ and FER+ are grey, cameras are not.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .au_train import (MODEL_AUS, au_matrix, au_names, batch_losses, calibrate_teacher, combo_keys,
                       restore_checkpoint, save_checkpoint, seed_all)

log = logging.getLogger(__name__)

SMILE_AUS = ("AU6", "AU12")


@dataclass
class MixConfig:
    aus: tuple = MODEL_AUS
    input_size: int = 64
    width: int = 32
    emb_dim: int = 128
    grey: bool = True
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    arc_s: float = 64.0
    arc_m: float = 0.3
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    au_loss_weight: float = 20.0
    min_class: int = 30
    neutral_keep: float = 0.35          # share of CK+ AU-less frames drawn per epoch
    # stage 1 (base)
    base_epochs: int = 10
    base_fer_per_epoch: int = 16000
    # stage 2 (fine)
    fine_epochs: int = 6
    fine_lr: float = 2e-3               # heads only (fine_freeze); the base keeps what it learned in the wild
    fine_fer_per_epoch: int = 8000
    ck_repeat: int = 1                  # CK+ AU frames drawn this many times per fine epoch
    arc_weight: float = 0.5             # ArcFace (AU-combination) loss weight in the fine stage
    fine_freeze: bool = True            # fine stage trains the heads only, on the base's frozen features
    # label weights
    fer_weight: float = 1.0             # FER+ happiness share -> AU12
    fer_au6_weight: float = 0.6         # ... -> AU6 (happiness is AU6+AU12 only in its prototype)
    fer_neutral_weight: float = 0.2     # clear neutral majority (>= 7/10 votes) -> every AU absent
    lfw_weight: float = 0.5             # LFW crowd label -> AU6 / AU12
    pseudo_weight: float = 0.3
    pseudo_min_auc: float = 0.85
    # v4: the identity network's smile teacher (smile2pay_tools.train.id_teacher), 0 = v3
    distill_weight: float = 0.0         # AU6/AU12 target = (1 - w) * human label + w * sigmoid(teacher logit)
    seed: int = 0
    threads: int = 1

    def to_dict(self):
        d = asdict(self)
        d["aus"] = list(self.aus)
        if not d["distill_weight"]:     # off (v3): left out, so v3 checkpoints' signatures still match (resume)
            del d["distill_weight"]
        return d


@dataclass
class MixSet:
    crops: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    cls: np.ndarray
    group: np.ndarray            # 0 CK+ with AU, 1 CK+ AU-less, 2 FER+, 3 LFW
    class_keys: list
    info: dict


def fer_smile_target(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(happiness share among the emotion votes, usable) from the 10 FER+ vote columns; a face whose
    votes are mostly 'unknown' / 'not a face' is not usable."""
    emo = votes[:, :8].sum(1)
    usable = (emo >= 5) & (votes[:, 9] < 5)
    share = np.where(emo > 0, votes[:, 1] / np.maximum(emo, 1), 0.0)
    return share.astype(np.float32), usable


def _smile_rows(y: np.ndarray, K: int, j6: int, j12: int, w6: float, w12: float) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights) rows that label AU6 and AU12 with ``y`` and leave every other AU unlabelled."""
    t = np.zeros((len(y), K), np.float32)
    w = np.zeros((len(y), K), np.float32)
    t[:, j12] = t[:, j6] = y
    w[:, j12], w[:, j6] = w12, w6
    return t, w


def _distilled(t: np.ndarray, idx: np.ndarray, teacher: tuple | None, cfg: MixConfig, j6: int, j12: int):
    """AU6 / AU12 targets of rows ``idx`` mixed with the teacher's (indices, logits); rows it has no score
    for keep the human label."""
    if teacher is None or cfg.distill_weight <= 0:
        return t
    ti, tl = teacher
    pos = {int(i): k for k, i in enumerate(ti)}
    rows = np.array([pos.get(int(i), -1) for i in idx])
    have = rows >= 0
    p = 1.0 / (1.0 + np.exp(-tl[rows[have]].astype(np.float64)))
    a = float(cfg.distill_weight)
    for j in (j6, j12):
        t[have, j] = (1.0 - a) * t[have, j] + a * p
    return t


def lfw_smile_labels(lfw: dict, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, 0/1 smile label as float32) of the LFW faces in ``mask`` with a label: Morishita's smile label
    where it exists, else muxspace's expression (happiness = 1, any other expression = 0)."""
    idx = np.flatnonzero(mask)
    lab, smile = lfw["label"][idx], lfw["smile"][idx]
    y = np.where(smile >= 0, smile, np.where(lab == "happiness", 1, 0)).astype(np.float32)
    known = (smile >= 0) | np.isin(lab, ["happiness", "neutral", "surprise", "anger", "sadness", "disgust",
                                         "fear", "contempt"])
    return idx[known], y[known]


def human_labels(fer: dict | None, fer_mask: np.ndarray | None, lfw: dict | None, lfw_mask: np.ndarray | None,
                 cfg: MixConfig, teacher: dict | None = None):
    """Targets/weights for AU6 and AU12 (plus all-AU negatives for clear neutrals) from human labels;
    ``teacher`` (:func:`smile2pay_tools.train.id_teacher.cross_fitted_teacher`): mixed in by ``distill_weight``."""
    names = au_names(cfg.aus)
    j6, j12 = names.index("AU6"), names.index("AU12")
    K = len(names)
    out = []
    if fer is not None:
        idx = np.flatnonzero(fer_mask)
        share, usable = fer_smile_target(fer["votes"][idx])
        idx, share = idx[usable], share[usable]
        t, w = _smile_rows(share, K, j6, j12, cfg.fer_au6_weight, cfg.fer_weight)
        neutral = fer["votes"][idx, 0] >= 7
        w[neutral] = np.maximum(w[neutral], cfg.fer_neutral_weight)
        t = _distilled(t, idx, teacher and (teacher["fer_idx"], teacher["fer_logit"]), cfg, j6, j12)
        out.append(("fer", idx, t, w))
    if lfw is not None:
        idx, y = lfw_smile_labels(lfw, lfw_mask)
        t, w = _smile_rows(y, K, j6, j12, cfg.lfw_weight, cfg.lfw_weight)
        t = _distilled(t, idx, teacher and (teacher["lfw_idx"], teacher["lfw_logit"]), cfg, j6, j12)
        out.append(("lfw", idx, t, w))
    return out


def teacher_pseudo(bs: np.ndarray, calib: dict, names, cfg: MixConfig) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated blendshape proxies as targets, weighted by the teacher's agreement with ground truth."""
    from .au_train import apply_calibration

    p = np.nan_to_num(apply_calibration(bs, calib, names), nan=0.0)
    w = np.zeros_like(p)
    for j, n in enumerate(names):
        if n in calib and n not in SMILE_AUS and calib[n][2] >= cfg.pseudo_min_auc:
            w[:, j] = cfg.pseudo_weight * (2.0 * calib[n][2] - 1.0) ** 2
    return p, w


def build_mix(ck: dict | None, ck_mask: np.ndarray | None, fer: dict | None, fer_mask, lfw: dict | None,
              lfw_mask, cfg: MixConfig, teacher: bool, smile_teacher: dict | None = None) -> MixSet:
    names = au_names(cfg.aus)
    crops, targets, weights, cls, group = [], [], [], [], []
    info: dict = {}
    class_keys: list = []
    calib: dict = {}
    if ck is not None and ck_mask is not None and ck_mask.any():
        idx = np.flatnonzero(ck_mask)
        y = au_matrix(ck["aus"][idx], cfg.aus)
        keys = combo_keys(y, cfg.aus)
        counts: dict[str, int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        class_keys = sorted(k for k, c in counts.items() if c >= cfg.min_class)
        cid = {k: i for i, k in enumerate(class_keys)}
        crops.append(ck["crops"][idx])
        targets.append(y)
        weights.append(np.ones_like(y))
        cls.append(np.array([cid.get(k, -1) for k in keys], np.int64))
        group.append(np.where(y.sum(1) > 0, 0, 1))
        info.update(n_ck=int(len(idx)), classes={k: counts[k] for k in class_keys},
                    n_distractor=int(sum(1 for k in keys if k not in cid)))
        if teacher:
            calib = calibrate_teacher(ck["blendshapes"][idx], y, names)
            info["teacher_train_auc"] = {k: round(v[2], 3) for k, v in calib.items()}
            info["calibration"] = {k: [round(v[0], 4), round(v[1], 4)] for k, v in calib.items()}
    for src, idx, t, w in human_labels(fer, fer_mask, lfw, lfw_mask, cfg, smile_teacher):
        d = fer if src == "fer" else lfw
        if calib:
            pt, pw = teacher_pseudo(d["blendshapes"][idx], calib, names, cfg)
            free = w == 0
            t = np.where(free & (pw > 0), pt, t)
            w = np.where(free, pw, w)
        crops.append(d["crops"][idx])
        targets.append(t)
        weights.append(w)
        cls.append(-np.ones(len(idx), np.int64))
        group.append(np.full(len(idx), 2 if src == "fer" else 3))
        info[f"n_{src}"] = int(len(idx))
    if calib:
        info["pseudo_aus"] = [n for n in names if n in calib and n not in SMILE_AUS
                              and calib[n][2] >= cfg.pseudo_min_auc]
    return MixSet(np.concatenate(crops), np.concatenate(targets).astype(np.float32),
                  np.concatenate(weights).astype(np.float32), np.concatenate(cls), np.concatenate(group),
                  class_keys, info)


def _epoch_order(ms: MixSet, cfg: MixConfig, stage: str, rng: np.random.RandomState) -> np.ndarray:
    g = ms.group
    fer = np.flatnonzero(g == 2)
    n_fer = cfg.base_fer_per_epoch if stage == "base" else cfg.fine_fer_per_epoch
    parts = [rng.permutation(fer)[:n_fer], np.flatnonzero(g == 3)]
    if stage == "fine":
        ck_au, ck_none = np.flatnonzero(g == 0), np.flatnonzero(g == 1)
        parts += [np.tile(ck_au, cfg.ck_repeat), rng.permutation(ck_none)[:int(round(cfg.neutral_keep * len(ck_none)))]]
    order = rng.permutation(np.concatenate(parts))
    return order[:(len(order) // cfg.batch) * cfg.batch]


def train_stage(ms: MixSet, cfg: MixConfig, stage: str, out_dir: str | Path, init: str | Path | None = None,
                resume: bool = True, progress: bool = True, eval_fn=None):
    """One stage; checkpoint (resumable) in ``out_dir/checkpoint.pt`` after every epoch."""
    import torch
    from tqdm import tqdm

    from .model import ArcFaceHead, AUNet

    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed + (0 if stage == "base" else 1))
    K = len(cfg.aus)
    net = AUNet(K, cfg.emb_dim, cfg.input_size, cfg.width, grey=cfg.grey).to(memory_format=torch.channels_last)
    if init is not None:
        st = torch.load(init, weights_only=False, map_location="cpu")
        net.load_state_dict(st["net"])
    head = ArcFaceHead(cfg.emb_dim, max(len(ms.class_keys), 1), cfg.arc_s, cfg.arc_m)
    params = list(net.parameters()) + list(head.parameters())
    epochs = cfg.base_epochs if stage == "base" else cfg.fine_epochs
    lr = cfg.lr if stage == "base" else cfg.fine_lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    rng = np.random.RandomState(cfg.seed)
    steps = len(_epoch_order(ms, cfg, stage, np.random.RandomState(0))) // cfg.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps * epochs),
                                                pct_start=0.15 if stage == "base" else 0.05)
    ckpt = Path(out_dir) / "checkpoint.pt"
    state = {"net": net, "head": head, "opt": opt, "sched": sched}
    start, history = 0, []
    sig = {"config": cfg.to_dict(), "stage": stage, "n": int(len(ms.crops)), "init": str(init) if init else None}
    if resume and ckpt.is_file():
        start, history = restore_checkpoint(ckpt, lambda st: st.get("sig") == sig, state, rng)
    t0 = time.time()
    use_arc = stage == "fine" and bool(ms.class_keys)
    frozen = stage == "fine" and cfg.fine_freeze
    if frozen:      # the backbone stays the base's: only the embedding and AU heads learn (see module doc)
        for n_, p_ in net.named_parameters():
            p_.requires_grad_(n_.startswith(("emb.", "au.")))

    def set_train():
        net.train()
        head.train()
        if frozen:
            for m in (net.stem, net.blocks, net.conv_last, net.gdc):
                m.eval()

    def forward(x):
        if not frozen:
            return net(x)
        with torch.no_grad():
            f = net.features(x)
        return net.emb(f), net.au(net.drop(f))

    for epoch in range(start, epochs):
        set_train()
        order = _epoch_order(ms, cfg, stage, rng)
        n_steps = len(order) // cfg.batch
        sums = np.zeros(3)
        bar = tqdm(range(n_steps), disable=not progress, desc=f"{stage} {epoch + 1}/{epochs}", leave=False,
                   mininterval=5)
        for step in bar:
            b = order[step * cfg.batch:(step + 1) * cfg.batch]
            l_arc, l_au = batch_losses(forward, head, ms.crops, ms.targets, ms.weights, ms.cls, b, rng, cfg, use_arc)
            loss = cfg.arc_weight * l_arc + cfg.au_loss_weight * l_au
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            sums += [loss.item(), l_arc.item(), l_au.item()]
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sums[0] / (step + 1):.3f}")
        rec = {"stage": stage, "epoch": epoch + 1, "loss": round(sums[0] / max(n_steps, 1), 4),
               "arc": round(sums[1] / max(n_steps, 1), 4), "au": round(sums[2] / max(n_steps, 1), 5),
               "seconds": round(time.time() - t0, 1)}
        if eval_fn is not None:
            net.eval()
            rec.update(eval_fn(net))
        history.append(rec)
        log.info("epoch %s", json.dumps(rec))
        if progress:
            print(json.dumps(rec), flush=True)
        save_checkpoint(ckpt, state, rng, epoch + 1, history, sig=sig, config=cfg.to_dict(),
                        class_keys=ms.class_keys, info=ms.info)
    net.eval()
    return net, history


def load_net(ckpt: str | Path):
    import torch

    from .model import AUNet

    st = torch.load(ckpt, weights_only=False, map_location="cpu")
    cfg = MixConfig(**{k: (tuple(v) if k == "aus" else v) for k, v in st["config"].items()})
    net = AUNet(len(cfg.aus), cfg.emb_dim, cfg.input_size, cfg.width, grey=cfg.grey)
    net.load_state_dict(st["net"])
    return net.eval(), cfg, st


def smile_eval_fn(sets: dict, cfg: MixConfig):
    """Per-epoch ROC AUC of min(AU6, AU12) on held-out sets: {name: (crops, y)}."""
    from sklearn.metrics import roc_auc_score

    from .au_train import predict

    names = au_names(cfg.aus)
    j6, j12 = names.index("AU6"), names.index("AU12")

    def fn(net):
        out = {}
        for k, (crops, y) in sets.items():
            p, _ = predict(net, crops, cfg.input_size)
            out[f"auc_{k}"] = round(float(roc_auc_score(y, np.minimum(p[:, j6], p[:, j12]))), 4)
        return out

    return fn


def with_overrides(cfg: MixConfig, **kw) -> MixConfig:
    return dataclasses.replace(cfg, **{k: v for k, v in kw.items() if v is not None})


# ------------------------------------------------------------------------------------------ driver
def load_sources(data_dir, models_dir, cache_dir, workers: int = 2, progress: bool = True):
    """CK+ (ground truth, the v2 cache format), FER+ and LFW caches."""
    from .run import load_or_build_caches
    from .sources import ferplus_cache, lfw_cache

    ck, _ = load_or_build_caches(data_dir, models_dir, cache_dir, 0, progress=progress)
    fer = ferplus_cache(data_dir, models_dir, cache_dir, workers=workers, progress=progress)
    lfw = lfw_cache(data_dir, models_dir, cache_dir, workers=workers, progress=progress)
    return ck, fer, lfw


def source_masks(fer: dict, lfw: dict) -> dict:
    from .sources import dedup_test_mask, dedup_train_mask

    train = dedup_train_mask(fer["split"], fer["pixel_md5"])
    return {"fer_train": train & (fer["split"] == "FER2013Train"),
            "fer_valid": train & (fer["split"] == "FER2013Valid"),
            "fer_test": dedup_test_mask(fer["split"], fer["pixel_md5"]),
            "lfw_train": lfw["role"] == "train", "lfw_calib": lfw["role"] == "calib", "lfw_test": lfw["role"] == "test"}


def monitor_sets(fer, lfw, masks, n: int = 1500, seed: int = 0) -> dict:
    """Held-out monitors (never the report sets): FER+ Valid (happiness majority) and LFW calibration people."""
    rng = np.random.RandomState(seed)
    out = {}
    share, usable = fer_smile_target(fer["votes"])
    i = rng.permutation(np.flatnonzero(masks["fer_valid"] & usable))[:n]
    out["fer_valid"] = (fer["crops"][i], (fer["votes"][i].argmax(1) == 1).astype(int))
    j = np.flatnonzero(masks["lfw_calib"] & (lfw["smile"] >= 0))[:n]
    out["lfw_calib"] = (lfw["crops"][j], lfw["smile"][j])
    return out


def smile_teacher(fer: dict, lfw: dict, masks: dict, cache_dir, models_dir, progress: bool = True) -> dict:
    """The identity network's cross-fitted smile teacher on the training rows (:mod:`.id_teacher`), with its
    AUC on the monitor sets (FER+ Valid, LFW calibration people; never a report set)."""
    from sklearn.metrics import roc_auc_score

    from .id_teacher import cached_features, cross_fitted_teacher

    Xf = cached_features("ferplus", fer, cache_dir, models_dir, progress=progress)
    Xl = cached_features("lfw", lfw, cache_dir, models_dir, progress=progress)
    t = cross_fitted_teacher(Xf, Xl, fer, masks["fer_train"], lfw, masks["lfw_train"])
    share, usable = fer_smile_target(fer["votes"])
    fv = np.flatnonzero(masks["fer_valid"] & usable)
    lc = np.flatnonzero(masks["lfw_calib"] & (lfw["smile"] >= 0))
    t["report"] = {"rows": {"fer": int(len(t["fer_idx"])), "lfw": int(len(t["lfw_idx"]))},
                   "auc_fer_valid": round(float(roc_auc_score(fer["votes"][fv, :8].argmax(1) == 1, t["fer_all"][fv])), 4),
                   "auc_lfw_calib": round(float(roc_auc_score(lfw["smile"][lc] == 1, t["lfw_all"][lc])), 4)}
    log.info("smile teacher %s", t["report"])
    return t


def run_mix(data_dir, models_dir, out_dir, *, cv: int = 5, folds=None, skip_final: bool = False,
            skip_base: bool = False, resume: bool = True, export: str | None = None, progress: bool = True,
            workers: int = 2, **overrides) -> dict:
    """``smile2pay train-au --recipe v3``: base -> (CK+ k-fold fine-tunes, out-of-fold) -> final fine-tune -> ONNX."""
    from ..datasets import subject_folds
    from .au_train import export_onnx, predict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = with_overrides(MixConfig(), **overrides)
    t_all = time.time()
    ck, fer, lfw = load_sources(data_dir, models_dir, out / "cache", workers=workers, progress=progress)
    masks = source_masks(fer, lfw)
    summary: dict = {"config": cfg.to_dict(), "n_ck": int(len(ck["crops"])),
                     "masks": {k: int(v.sum()) for k, v in masks.items()},
                     "fer_detected": f"{len(fer['path'])}/{fer['n_requested']}",
                     "lfw_detected": f"{len(lfw['path'])}/{lfw['n_requested']}"}
    mon = smile_eval_fn(monitor_sets(fer, lfw, masks), cfg)
    st = None
    if cfg.distill_weight > 0:      # v4: the identity network's smile teacher (id_teacher)
        st = smile_teacher(fer, lfw, masks, out / "cache", models_dir, progress=progress)
        summary["smile_teacher"] = st["report"]
    base_ckpt = out / "base" / "checkpoint.pt"
    if not skip_base:
        ms = build_mix(None, None, fer, masks["fer_train"], lfw, masks["lfw_train"], cfg, teacher=False,
                       smile_teacher=st)
        _, hist = train_stage(ms, cfg, "base", out / "base", resume=resume, progress=progress, eval_fn=mon)
        summary["base"] = {"info": ms.info, "history": hist}
    fold_of = subject_folds(ck["subject"], k=max(cv, 2), seed=cfg.seed)
    fold = np.array([fold_of[s] for s in ck["subject"]])
    for f in (folds if folds is not None else (range(cv) if cv else ())):
        ms = build_mix(ck, fold != f, fer, masks["fer_train"], lfw, masks["lfw_train"], cfg, teacher=True,
                       smile_teacher=st)
        fdir = out / "cv" / f"fold{f}"
        net, hist = train_stage(ms, cfg, "fine", fdir, init=base_ckpt, resume=resume, progress=progress, eval_fn=mon)
        te = np.flatnonzero(fold == f)
        p, e = predict(net, ck["crops"][te], cfg.input_size)
        np.savez(fdir / "oof.npz", idx=te, probs=p, embs=e, path=ck["path"][te])
        (fdir / "info.json").write_text(json.dumps({"trainset": ms.info, "history": hist}, indent=1, default=str))
        summary.setdefault("folds", {})[f] = hist[-1]
    if skip_final:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        return summary
    ms = build_mix(ck, np.ones(len(ck["crops"]), bool), fer, masks["fer_train"], lfw, masks["lfw_train"], cfg,
                   teacher=True, smile_teacher=st)
    net, hist = train_stage(ms, cfg, "fine", out / "final", init=base_ckpt, resume=resume, progress=progress,
                            eval_fn=mon)
    path = Path(export) if export else out / "au_mobile.onnx"
    export_onnx(net, path, export_cfg(cfg), metadata={
        "classes": ms.class_keys, "recipe": "v3 (smile2pay_tools.train.au_mix)",
        "trainset": {k: ms.info.get(k) for k in ("n_ck", "n_fer", "n_lfw", "classes", "pseudo_aus")},
        "teacher_calibration": ms.info.get("calibration", {})})
    from smile2pay.models.store import sha256_file
    from .run import torch_onnx_max_diff

    summary.update(final={"info": ms.info, "history": hist}, onnx=str(path), onnx_bytes=path.stat().st_size,
                   onnx_sha256=sha256_file(path),
                   onnx_vs_torch_max_abs_diff=torch_onnx_max_diff(net, path, ck["crops"][:32], cfg.input_size),
                   total_seconds=round(time.time() - t_all, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def export_cfg(cfg: MixConfig):
    """export_onnx reads aus and input_size only."""
    from .au_train import TrainConfig

    return dataclasses.replace(TrainConfig(), aus=cfg.aus, input_size=cfg.input_size, width=cfg.width,
                               emb_dim=cfg.emb_dim)


# TODO(vocabulary): remove once bench/smile_to_pay.py and tests/integration/test_train_au_v3.py call export_cfg
