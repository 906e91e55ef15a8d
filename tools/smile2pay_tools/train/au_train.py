"""Train the AU network: data rules, augmentation, the training loop, k-fold-by-subject evaluation, export.

Recipe (issue 4 / design card):

* Ground truth: CK+ frames (FACS AU sets per sequence; neutral first frames are AU-negative).
* Pseudo-labels: real-resolution faces (LFW) labelled by the MediaPipe blendshape teacher. The
  teacher's AU proxies are Platt-calibrated (1-D logistic regression) on the *training* subjects'
  CK+ frames; only AUs whose teacher AUC on those frames reaches ``pseudo_min_auc`` are used, with
  weight ``pseudo_weight`` (< 1: ground truth counts more).
* Head 1: ArcFace (s=64, m=0.3) over AU-combination classes (the AU set restricted to the model's
  AUs; the empty set is the neutral class), focal loss (alpha 0.5, gamma 2) on the margin logits.
  Combinations with fewer than ``min_class`` training samples form the distractor set: no class of
  their own, still used by head 2 (and as negatives). Pseudo-labelled faces have no class.
* Head 2: per-AU logits, focal BCE (alpha 0.5, gamma 2).
* AU-less samples are down-sampled each epoch (``neutral_keep``); ``val_frac`` of each class
  (whole sequences) is held out for validation; the final model trains on everything.
* Reported numbers come from k-fold cross-validation by subject (:func:`cross_validate`).
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from smile2pay.models.manifest import AU_NAMES

log = logging.getLogger(__name__)

#: AUs the default model is trained on (enough CK+ sequences; AU43 has none in CK+): the shipped model's
#: outputs, declared in its manifest entry (smile2pay.models.manifest.AU_NAMES), as FACS numbers.
MODEL_AUS = tuple(int(name[2:]) for name in AU_NAMES)


@dataclass
class TrainConfig:
    aus: tuple = MODEL_AUS
    input_size: int = 64
    width: int = 32
    emb_dim: int = 128
    epochs: int = 24
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    arc_s: float = 64.0
    arc_m: float = 0.3
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    au_loss_weight: float = 20.0
    min_class: int = 30
    neutral_keep: float = 0.35        # share of AU-less samples drawn per epoch
    val_frac: float = 0.1
    pseudo_weight: float = 0.3
    pseudo_per_epoch: int = 1200
    pseudo_min_auc: float = 0.85
    seed: int = 0
    threads: int = 1
    limit: int = 0                    # smoke: use only this many samples

    def to_dict(self):
        d = asdict(self)
        d["aus"] = list(self.aus)
        return d


def au_names(aus) -> list[str]:
    return [f"AU{a}" for a in aus]


# ------------------------------------------------------------------------------------ data
def au_matrix(au_strings, aus) -> np.ndarray:
    idx = {a: j for j, a in enumerate(aus)}
    y = np.zeros((len(au_strings), len(aus)), np.float32)
    for i, s in enumerate(au_strings):
        for t in str(s).split(";"):
            if t and int(t) in idx:
                y[i, idx[int(t)]] = 1.0
    return y


def combo_keys(y: np.ndarray, aus) -> list[str]:
    """AU-combination class key of each row, e.g. ``'6+12+25'`` ('' = no AU)."""
    return ["+".join(str(aus[j]) for j in np.flatnonzero(r)) for r in y]


@dataclass
class TrainSet:
    crops: np.ndarray          # (N, 112, 112, 3) uint8
    targets: np.ndarray        # (N, K) in [0, 1]
    weights: np.ndarray        # (N, K)
    cls: np.ndarray            # (N,) class id or -1 (distractor / pseudo)
    no_au: np.ndarray          # (N,) bool: ground-truth sample without any AU (down-sampled)
    pseudo: np.ndarray         # (N,) bool
    class_keys: list = field(default_factory=list)
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    info: dict = field(default_factory=dict)


def calibrate_teacher(bs_train: np.ndarray, y_train: np.ndarray, names) -> dict:
    """Per AU: logistic regression of the teacher proxy on ground truth; returns {name: (a, b, auc)}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from smile2pay.vision.au import blendshapes_to_au_array

    prox = blendshapes_to_au_array(bs_train, names)
    out = {}
    for j, n in enumerate(names):
        if np.isnan(prox[:, j]).all() or y_train[:, j].min() == y_train[:, j].max():
            continue
        x = prox[:, j:j + 1].astype(np.float64)
        lr = LogisticRegression(C=10.0).fit(x, y_train[:, j])
        out[n] = (float(lr.coef_[0, 0]), float(lr.intercept_[0]), float(roc_auc_score(y_train[:, j], x[:, 0])))
    return out


def apply_calibration(bs: np.ndarray, calib: dict, names) -> np.ndarray:
    from smile2pay.vision.au import blendshapes_to_au_array

    prox = blendshapes_to_au_array(bs, names)
    out = np.full(prox.shape, np.nan, np.float32)
    for j, n in enumerate(names):
        if n in calib:
            a, b, _ = calib[n]
            out[:, j] = 1.0 / (1.0 + np.exp(-(a * prox[:, j] + b)))
    return out


def build_trainset(ck: dict, train_mask: np.ndarray, lfw: dict | None, cfg: TrainConfig,
                   holdout_val: bool) -> TrainSet:
    names = au_names(cfg.aus)
    idx = np.flatnonzero(train_mask)
    y = au_matrix(ck["aus"][idx], cfg.aus)
    keys = combo_keys(y, cfg.aus)
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    class_keys = sorted(k for k, c in counts.items() if c >= cfg.min_class)
    cid = {k: i for i, k in enumerate(class_keys)}
    cls = np.array([cid.get(k, -1) for k in keys], np.int64)
    no_au = y.sum(1) == 0
    # validation: val_frac of each class, whole sequences (CK+48 frames of a sequence are near-duplicates)
    val = np.zeros(len(idx), bool)
    if holdout_val and cfg.val_frac > 0:
        rng = np.random.RandomState(cfg.seed)
        seqs = ck["sequence"][idx]
        for c in range(len(class_keys)):
            sq = sorted(set(seqs[cls == c]))
            rng.shuffle(sq)
            take = set(sq[:max(1, int(round(cfg.val_frac * len(sq))))])
            val |= (cls == c) & np.isin(seqs, list(take))
    calib = calibrate_teacher(ck["blendshapes"][idx], y, names)
    crops = [ck["crops"][idx]]
    targets, weights = [y], [np.ones_like(y)]
    cls_l, no_au_l, pseudo_l = [cls], [no_au], [np.zeros(len(idx), bool)]
    used_pseudo = [n for n in names if n in calib and calib[n][2] >= cfg.pseudo_min_auc]
    if lfw is not None and len(lfw["crops"]) and used_pseudo:
        pt = apply_calibration(lfw["blendshapes"], calib, names)
        w = np.zeros_like(pt)
        for j, n in enumerate(names):
            if n in used_pseudo:
                w[:, j] = cfg.pseudo_weight
        crops.append(lfw["crops"])
        targets.append(np.nan_to_num(pt, nan=0.0))
        weights.append(w)
        n = len(lfw["crops"])
        cls_l.append(-np.ones(n, np.int64))
        no_au_l.append(np.zeros(n, bool))
        pseudo_l.append(np.ones(n, bool))
    ts = TrainSet(np.concatenate(crops), np.concatenate(targets), np.concatenate(weights), np.concatenate(cls_l),
                  np.concatenate(no_au_l), np.concatenate(pseudo_l), class_keys, np.flatnonzero(val))
    ts.info = {"n_gt": int(len(idx)), "n_pseudo": int(ts.pseudo.sum()), "classes": {k: counts[k] for k in class_keys},
               "n_distractor": int((cls == -1).sum()), "n_no_au": int(no_au.sum()), "n_val": int(val.sum()),
               "pseudo_aus": used_pseudo, "teacher_train_auc": {k: round(v[2], 3) for k, v in calib.items()}}
    ts.info["calibration"] = {k: [round(v[0], 4), round(v[1], 4)] for k, v in calib.items()}
    return ts


# ------------------------------------------------------------------------------ augmentation
def augment(crop: np.ndarray, rng: np.random.RandomState, size: int) -> np.ndarray:
    """Flip, small affine, colour, blur, grey, low resolution; then the runtime resize."""
    from smile2pay.vision.au import resize_crop

    img = crop
    h, w = img.shape[:2]
    if rng.rand() < 0.5:
        img = img[:, ::-1]
    ang = rng.uniform(-10, 10)
    sc = rng.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), ang, sc)
    m[:, 2] += rng.uniform(-0.04, 0.04, 2) * w
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    if rng.rand() < 0.3:   # low resolution (CK+ is 48x48; real cameras vary)
        r = int(rng.uniform(28, 56))
        img = cv2.resize(cv2.resize(img, (r, r), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.rand() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    img = resize_crop(img, size).astype(np.float32)
    if rng.rand() < 0.3:
        g = img.mean(2, keepdims=True)
        img = np.repeat(g, 3, 2)
    else:
        sat = rng.uniform(0.7, 1.3)
        g = img.mean(2, keepdims=True)
        img = g + (img - g) * sat
        img = img * rng.uniform(0.9, 1.1, (1, 1, 3))
    img = (img - 128.0) * rng.uniform(0.7, 1.3) + 128.0 + rng.uniform(-25, 25)
    return np.clip(img, 0, 255)


def to_blob(imgs: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) BGR float/uint8 -> (N, 3, S, S) RGB (x - 127.5) / 127.5 (= the ModelSpec)."""
    x = np.asarray(imgs, np.float32)[..., ::-1]
    return np.ascontiguousarray((x.transpose(0, 3, 1, 2) - 127.5) / 127.5)


def plain_batch(crops: np.ndarray, size: int) -> np.ndarray:
    from smile2pay.vision.au import resize_crop

    return to_blob(np.stack([resize_crop(c, size) for c in crops]))


# ---------------------------------------------------------------------------------- training
def seed_all(seed: int):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def restore_checkpoint(ckpt: Path, matches, state: dict, rng: np.random.RandomState) -> tuple[int, list]:
    """Resume ``state`` (name -> object with ``load_state_dict``: net, head, opt, sched) and ``rng`` from
    ``ckpt`` when ``matches(saved)`` holds; returns (start epoch, history), (0, []) when it was written for
    another run (logged). Shared by both recipes."""
    import torch

    st = torch.load(ckpt, weights_only=False, map_location="cpu")
    if not matches(st):
        log.warning("%s was written for another run; starting afresh", ckpt)
        return 0, []
    for k, obj in state.items():
        obj.load_state_dict(st[k])
    rng.set_state(st["rng"])
    torch.set_rng_state(st["torch_rng"])
    log.info("resumed from %s at epoch %d", ckpt, st["epoch"])
    return st["epoch"], st["history"]


def save_checkpoint(ckpt: Path, state: dict, rng: np.random.RandomState, epoch: int, history: list, **extra) -> None:
    """Atomic checkpoint (temp file + rename) of ``state``'s state dicts, both RNGs and ``extra``."""
    import torch

    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_suffix(".tmp")
    torch.save({**{k: obj.state_dict() for k, obj in state.items()}, "rng": rng.get_state(),
                "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history, **extra}, tmp)
    os.replace(tmp, ckpt)


def batch_losses(forward, head, crops, targets, weights, cls, b, rng, cfg, use_arc: bool):
    """One batch ``b``: augment, forward, (ArcFace focal loss over the samples with a class, per-AU focal BCE)."""
    import torch

    from .model import focal_bce, focal_softmax_loss

    x = torch.from_numpy(to_blob(np.stack([augment(crops[i], rng, cfg.input_size) for i in b])))
    emb, logits = forward(x.contiguous(memory_format=torch.channels_last))
    l_au = focal_bce(logits, torch.from_numpy(targets[b]), torch.from_numpy(weights[b]), cfg.focal_alpha,
                     cfg.focal_gamma)
    c = torch.from_numpy(cls[b])
    has = c >= 0
    l_arc = (focal_softmax_loss(head(emb[has], c[has]), c[has], cfg.focal_alpha, cfg.focal_gamma)
             if use_arc and bool(has.any()) else torch.zeros(()))
    return l_arc, l_au


def train_model(ts: TrainSet, cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = True,
                progress: bool = True, eval_fn=None):
    """Train on ``ts`` (minus ``ts.val_idx``); returns the torch AUNet (eval mode) and a history."""
    import torch
    from tqdm import tqdm

    from .model import ArcFaceHead, AUNet

    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    K = len(cfg.aus)
    net = AUNet(K, cfg.emb_dim, cfg.input_size, cfg.width).to(memory_format=torch.channels_last)
    head = ArcFaceHead(cfg.emb_dim, max(len(ts.class_keys), 1), cfg.arc_s, cfg.arc_m)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.RandomState(cfg.seed)
    train_idx = np.setdiff1d(np.arange(len(ts.cls)), ts.val_idx)
    gt = train_idx[~ts.pseudo[train_idx]]
    gt_au, gt_none = gt[~ts.no_au[gt]], gt[ts.no_au[gt]]
    ps = train_idx[ts.pseudo[train_idx]]
    n_epoch = len(gt_au) + int(round(cfg.neutral_keep * len(gt_none))) + min(cfg.pseudo_per_epoch, len(ps))
    steps_per_epoch = max(1, n_epoch // cfg.batch)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir else None
    state = {"net": net, "head": head, "opt": opt, "sched": sched}
    start_epoch, history = 0, []
    if ckpt is not None and resume and ckpt.is_file():
        start_epoch, history = restore_checkpoint(ckpt, lambda st: st.get("config") == cfg.to_dict(), state, rng)
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        head.train()
        pick = [gt_au, rng.permutation(gt_none)[:int(round(cfg.neutral_keep * len(gt_none)))],
                rng.permutation(ps)[:cfg.pseudo_per_epoch]]
        order = rng.permutation(np.concatenate(pick))[:steps_per_epoch * cfg.batch]
        sums = np.zeros(3)
        bar = tqdm(range(steps_per_epoch), disable=not progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, mininterval=2)
        for step in bar:
            b = order[step * cfg.batch:(step + 1) * cfg.batch]
            l_arc, l_au = batch_losses(net, head, ts.crops, ts.targets, ts.weights, ts.cls, b, rng, cfg,
                                       bool(ts.class_keys))
            loss = l_arc + cfg.au_loss_weight * l_au
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            sums += [loss.item(), l_arc.item(), l_au.item()]
            bar.set_postfix(loss=f"{sums[0] / (step + 1):.3f}")
        rec = {"epoch": epoch + 1, "loss": sums[0] / steps_per_epoch, "arc": sums[1] / steps_per_epoch,
               "au": sums[2] / steps_per_epoch, "seconds": round(time.time() - t0, 1)}
        if eval_fn is not None:
            net.eval()
            rec.update(eval_fn(net))
        history.append(rec)
        log.info("epoch %s", json.dumps(rec))
        if progress:
            print(json.dumps(rec), flush=True)
        if ckpt is not None:
            save_checkpoint(ckpt, state, rng, epoch + 1, history, config=cfg.to_dict(), class_keys=ts.class_keys)
    net.eval()
    return net, history


def predict(net, crops: np.ndarray, size: int, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    probs, embs = [], []
    net.eval()
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            emb, logits = net(torch.from_numpy(plain_batch(crops[i:i + batch], size)))
            probs.append(torch.sigmoid(logits).numpy())
            embs.append(F.normalize(emb, dim=1).numpy())
    return np.concatenate(probs), np.concatenate(embs)


def val_eval_fn(ts: TrainSet, cfg: TrainConfig):
    """Per-epoch validation on the held-out 10%: mean AUC over AUs with both classes present."""
    from sklearn.metrics import roc_auc_score

    if not len(ts.val_idx):
        return None
    crops, y = ts.crops[ts.val_idx], ts.targets[ts.val_idx]

    def fn(net):
        p, _ = predict(net, crops, cfg.input_size)
        aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
        return {"val_mean_auc": round(float(np.mean(aucs)), 4) if aucs else None}

    return fn


# ------------------------------------------------------------------------------------ export
def export_onnx(net, path: str | Path, cfg: TrainConfig, metadata: dict | None = None) -> Path:
    """One self-contained ONNX file (no external data): outputs ``au_probs`` and ``au_embedding``."""
    import onnx
    import torch

    from .model import ExportWrapper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrap = ExportWrapper(net).eval()
    x = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(wrap, (x,), str(tmp), input_names=["input"], output_names=["au_probs", "au_embedding"],
                      dynamic_axes={"input": {0: "batch"}, "au_probs": {0: "batch"}, "au_embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    meta = {"au_names": json.dumps(au_names(cfg.aus)), "input_size": str(cfg.input_size),
            "preprocess": "AU crop (norm_crop pad=0.15, 112) -> resize to input_size (INTER_AREA) -> BGR->RGB -> "
                          "(x-127.5)/127.5, NCHW",
            "producer": "smile2pay_tools.train.au_train"}
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()})
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    tmp.unlink(missing_ok=True)
    for extra in path.parent.glob(tmp.name + "*"):
        extra.unlink()
    return path


# --------------------------------------------------------------------------------- k-fold CV
def cross_validate(ck: dict, lfw: dict | None, cfg: TrainConfig, k: int = 5, out_dir: str | Path | None = None,
                   folds_to_run=None, progress: bool = True) -> dict:
    """k-fold by subject: trains k models, returns out-of-fold probabilities and embeddings."""
    from ..datasets import subject_folds

    fold_of = subject_folds(ck["subject"], k=k, seed=cfg.seed)
    fold = np.array([fold_of[s] for s in ck["subject"]])
    n, K = len(fold), len(cfg.aus)
    probs = np.full((n, K), np.nan, np.float32)
    embs = np.zeros((n, cfg.emb_dim), np.float32)
    infos, times = {}, {}
    for f in (folds_to_run if folds_to_run is not None else range(k)):
        t0 = time.time()
        ts = build_trainset(ck, fold != f, lfw, cfg, holdout_val=True)
        fdir = Path(out_dir) / f"fold{f}" if out_dir else None
        net, hist = train_model(ts, cfg, fdir, progress=progress, eval_fn=val_eval_fn(ts, cfg))
        te = np.flatnonzero(fold == f)
        probs[te], embs[te] = predict(net, ck["crops"][te], cfg.input_size)
        times[f] = round(time.time() - t0, 1)
        infos[f] = {"trainset": ts.info, "history": hist, "seconds": times[f]}
        if fdir is not None:
            np.savez(fdir / "oof.npz", idx=te, probs=probs[te], embs=embs[te])
            (fdir / "info.json").write_text(json.dumps(infos[f], indent=1))
    return {"fold": fold, "probs": probs, "embs": embs, "info": infos, "seconds": times}
