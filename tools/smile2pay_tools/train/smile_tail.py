"""The smile tail: the recogniser's last stages, fine-tuned for smiles on a tensor it already computes (issue 14).

Why: the smile probe (:mod:`smile2pay.vision.smile_probe`) reads two inner tensors of ``w600k_mbf``: ``473``
(256 x 14 x 14, the end of the 14 x 14 stage) and ``509`` (512 x 7 x 7, before the global depthwise conv). A
linear read-out of frozen identity features plateaus: a nonlinear head on the same tensors, a stacker over
every score the product has and flip augmentation each moved FER+ test by < 0.5 points (15th-16th stops).
What moved it is letting the features themselves adapt. The tail is a **copy** of the recogniser's nodes
from ``462`` (the last 14 x 14 inverted-residual block) to ``509`` (the 7 x 7 stage: three more blocks and the
1 x 1 expansion; 805k weights), fine-tuned together with the probe's linear read-out; it returns its own ``473``
and ``509``. The identity network itself is untouched (the embedding, its thresholds and LFW do not move). In
the product the recogniser returns ``462`` beside the embedding and the tail (an ONNX file, ~1.6 ms a face on
one thread) computes both probe tensors. The v3 tail (16th stop) started at ``473`` (670k weights, ~1.1 ms) and
returned ``509`` only (``--start 473``).

Training (:func:`train_tail`): FER+ training split (usable votes, happiness share as a soft target) and LFW
training-quarter people (0/1 smile label), the rows the probe learns from (:func:`id_teacher.teacher_rows`);
each row also as its mirror image. Never CK+ (its subjects stay out-of-fold for the probe fitted afterwards),
never FER+ Valid / test or LFW calibration / test people. The read-out starts as the plain probe fitted on the
frozen features, the tail as the recogniser's weights: epoch 0 is the frozen probe exactly. AdamW (lr 1e-4,
cosine), batch 128, 5 epochs; a checkpoint after every epoch (resumed when present). ~3 min an epoch on two cores
once the start tensors are cached (``t462_<source>[_flip].npy`` in the run's cache: 7 GB, ~15 min to build).

After training, ``benchmarks/au_identity_features.py --probe-ck --export-probe ...`` refits the probe's linear
read-out on the tail's features (CK+ rows included, out-of-fold) and writes the calibration, as before.

Licence: a fine-tuned copy of InsightFace's ``w600k_mbf`` weights (non-commercial research only), trained on
FER2013 / LFW faces (research use): research/evaluation use only.

Usage::

    python -m smile2pay_tools.train.smile_tail --run results/au3 --out smile2pay/models/weights/smile_tail.onnx
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

START, STOP = "473", "509"
#: where the shipped tail starts (since the 17th stop): one inverted-residual block before 473
DEFAULT_START = "462"
TAIL_FILE = "smile_tail.onnx"


def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    return torch, nn, F


def tail_nodes(onnx_bytes: bytes, start: str = START, stop: str = STOP):
    """The recogniser's nodes from the first one reading ``start`` to the one writing ``stop``, and the
    initialisers (weights) they read. Raises ValueError when the graph has no such path or an op the tail
    cannot express (Conv, PRelu, Add only)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(onnx_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    nodes, on, done = [], False, False
    for n in m.graph.node:
        if start in n.input:
            on = True
        if on:
            if n.op_type not in ("Conv", "PRelu", "Add"):
                raise ValueError(f"tail {start}->{stop}: unsupported op {n.op_type}")
            nodes.append(n)
        if stop in n.output and on:
            done = True
            break
    if not done:
        raise ValueError(f"the recogniser has no path {start} -> {stop}")
    return nodes, inits


def make_tail(onnx_bytes: bytes, start: str = START, stop: str = STOP, outputs: tuple[str, ...] | None = None):
    """The recogniser's ``start -> stop`` nodes as a torch module with its weights (trainable). It returns the
    ``stop`` tensor, or with ``outputs`` (names of tensors on the path, ``stop`` last) a tuple of them."""
    import onnx

    torch, nn, F = _torch()
    nodes, inits = tail_nodes(onnx_bytes, start, stop)
    if outputs is not None and (not outputs or outputs[-1] != stop):
        raise ValueError(f"the tail's outputs must end with {stop}: {outputs}")
    if outputs is not None and not set(outputs) <= {n.output[0] for n in nodes}:
        raise ValueError(f"the path {start} -> {stop} does not compute all of {outputs}")

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = nn.ParameterDict()
            self.ops = []
            for n in nodes:
                at = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                for k in n.input:
                    if k in inits and "p" + k not in self.params:
                        self.params["p" + k] = nn.Parameter(torch.tensor(inits[k].astype(np.float32)))
                if n.op_type == "Conv":
                    p = list(at.get("pads", [0, 0, 0, 0]))
                    if p[0] != p[2] or p[1] != p[3]:
                        raise ValueError(f"asymmetric padding in {n.name}")
                self.ops.append((n.op_type, list(n.input), n.output[0], at))

        def forward(self, x):
            env = {start: x}

            def g(k):
                return env[k] if k in env else self.params["p" + k]

            for op, ins, out, at in self.ops:
                if op == "Conv":
                    p = list(at.get("pads", [0, 0, 0, 0]))
                    y = F.conv2d(g(ins[0]), g(ins[1]), g(ins[2]) if len(ins) > 2 else None,
                                 stride=tuple(at.get("strides", [1, 1])), padding=(p[0], p[1]),
                                 groups=int(at.get("group", 1)))
                elif op == "PRelu":          # exported as one PRelu node (what the graph rewrite knows)
                    y = F.prelu(g(ins[0]), g(ins[1]).reshape(-1))
                else:
                    y = g(ins[0]) + g(ins[1])
                env[out] = y
            return env[stop] if outputs is None else tuple(env[k] for k in outputs)

    return Tail()


def bands_torch(x):
    """:func:`smile2pay.vision.smile_probe.pool_bands` in torch (same bands, same order)."""
    torch, _, _ = _torch()
    h = x.shape[2]
    rows = np.array_split(np.arange(h), 3)
    return torch.cat([x.mean((2, 3))] + [x[:, :, r[0]:r[-1] + 1].mean((2, 3)) for r in rows], 1)


def export_tail(tail, path, start: str = START, outputs: tuple[str, ...] = (STOP,)) -> str:
    """Write the tail as ONNX (input ``t<start>`` [N, 256, 14, 14] -> outputs ``t<name>`` for each of ``outputs``;
    by default ``t473`` -> ``t509``), through a temporary file and a rename; returns the file's sha256."""
    import io

    torch, _, _ = _torch()
    tail = tail.eval()
    buf = io.BytesIO()
    import inspect

    # the TorchScript exporter (torch >= 2.9 defaults to the dynamo one; older releases have no such argument)
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    names = ["t" + k for k in outputs]
    torch.onnx.export(tail, torch.zeros(1, 256, 14, 14), buf, input_names=["t" + start], output_names=names,
                      dynamic_axes={k: {0: "n"} for k in ["t" + start] + names}, opset_version=17, **legacy)
    from .id_teacher import write_atomic

    return write_atomic(path, buf.getvalue())


def cached_start_tensors(name: str, src: dict, cache_dir, models_dir, flip: bool = False,
                         progress: bool = True, start: str = START) -> np.ndarray:
    """(N, 256, 14, 14) float16 ``start`` tensors (default ``473``) of one source's crops (mirrored with ``flip``),
    memory-mapped from ``cache_dir/t<start>_<name>[_flip].npy``; built on first use (the path list beside it keys
    the cache)."""
    from tqdm import tqdm

    from .id_teacher import feature_session, recogniser_blob

    cache_dir = Path(cache_dir)
    base = cache_dir / f"t{start}_{name}{'_flip' if flip else ''}"
    npy, keys = base.with_suffix(".npy"), base.with_suffix(".paths.npz")
    paths = np.asarray(src["path"]).astype(str)
    if npy.is_file() and keys.is_file():
        k = np.load(keys, allow_pickle=False)["path"]
        if len(k) == len(paths) and bool((k == paths).all()):
            return np.load(npy, mmap_mode="r")
        log.info("%s: stale (different faces), recomputing", npy)
    sess = feature_session(models_dir, tensors=(start,))
    inp = sess.get_inputs()[0].name
    crops = src["crops"]
    tmp = base.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, "w+", np.float16, (len(crops), 256, 14, 14))
    for i in tqdm(range(0, len(crops), 256), disable=not progress, desc=f"{start} tensors {name}", mininterval=5):
        blob = recogniser_blob(crops[i:i + 256], flip=flip)
        out[i:i + len(blob)] = sess.run([start], {inp: blob})[0]
    out.flush()
    del out
    os.replace(tmp, npy)
    np.savez(keys, path=paths)
    return np.load(npy, mmap_mode="r")


def train_tail(run, data_dir, models_dir, out, epochs: int = 5, lr: float = 1e-4, batch: int = 128,
               flip: bool = True, seed: int = 0, threads: int = 2, progress: bool = True, aux: float = 0.0,
               tag: str = "", start: str = DEFAULT_START) -> dict:
    """Fine-tune the tail with the probe's linear read-out (module docstring); write the tail to ``out`` (ONNX)
    and return its sha256 and the per-epoch monitors (FER+ Valid, LFW calibration people: AUC and smiles at
    2 % others; neither is a training row). Resumes from the epoch checkpoints in its folder (below).

    ``aux`` > 0 adds an auxiliary task on the same pooled features: a linear 8-way head trained by
    cross-entropy against each FER+ training face's distribution of emotion votes (neutral, happiness,
    surprise, sadness, anger, disgust, fear, contempt), weighted by ``aux``; LFW rows do not enter it. The head
    is dropped at export: the product reads the tail and the smile read-out only. Measured on the 473 tail
    (2026-12-07, 17th stop, weight 0.5): no gain (epoch 5 FER+ Valid AUC 0.9968, smiles at 2 % 95.0 % against
    95.2 % without; LFW calibration people 88.1 % against 89.6 %), so the shipped tail is trained without it.

    ``start`` other than ``473`` (the default ``462``, one inverted-residual block earlier) makes a deeper tail: it
    returns its own ``473`` and ``509``, and the read-out pools both (instead of the recogniser's ``473``).
    ``start="473"`` is the v3 tail (16th stop). Checkpoints (``epoch_K.pt``) go to ``run/smile_tail_s<start>[_tag]``,
    or ``run/smile_tail[_tag]`` for ``473``."""
    from sklearn.metrics import roc_auc_score

    torch, nn, _ = _torch()
    from .au_mix import fer_smile_target, load_sources, source_masks
    from .id_teacher import TEACHER_MODEL, cached_features, probe_params, teacher_rows

    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    run = Path(run)
    cache = run / "cache"
    ck_dir = run / ("smile_tail" + (f"_s{start}" if start != START else "") + (f"_{tag}" if tag else ""))
    ck_dir.mkdir(parents=True, exist_ok=True)
    ck, fer, lfw = load_sources(data_dir, models_dir, cache, progress=progress)
    masks = source_masks(fer, lfw)
    share, usable = fer_smile_target(fer["votes"])
    fi, fy, li, ly = teacher_rows(fer, masks["fer_train"], lfw, masks["lfw_train"], soft=True)
    y = torch.tensor(np.r_[fy, ly], dtype=torch.float32)
    if aux > 0:     # the auxiliary task's targets: each FER+ row's emotion-vote distribution (LFW rows: none)
        emo = fer["votes"][fi, :8].astype(np.float32)
        q = torch.tensor(np.r_[emo / emo.sum(1, keepdims=True), np.zeros((len(li), 8), np.float32)])
        has_q = torch.tensor(np.r_[np.ones(len(fi)), np.zeros(len(li))], dtype=torch.bool)
    # the read-out's start: the plain probe on the frozen features of the same rows
    Xf = cached_features("ferplus", fer, cache, models_dir, progress=progress, tail=None).astype(np.float32)
    Xl = cached_features("lfw", lfw, cache, models_dir, progress=progress, tail=None).astype(np.float32)
    w0, b0 = probe_params(np.concatenate([Xf[fi], Xl[li]]), np.r_[fy, ly])
    views = [(cached_start_tensors("ferplus", fer, cache, models_dir, progress=progress, start=start),
              cached_start_tensors("lfw", lfw, cache, models_dir, progress=progress, start=start))]
    if flip:
        views.append(tuple(cached_start_tensors(nm, src, cache, models_dir, flip=True, progress=progress, start=start)
                           for nm, src in (("ferplus", fer), ("lfw", lfw))))
    train = [torch.from_numpy(np.concatenate([F_[fi], L_[li]])) for F_, L_ in views]
    rec_bytes = (Path(models_dir) / TEACHER_MODEL).read_bytes()
    deep = start != START
    outputs = (START, STOP) if deep else (STOP,)
    tail = make_tail(rec_bytes, start=start, outputs=outputs)

    def pooled(a):
        o = tail(a)
        return torch.cat([bands_torch(t) for t in ((*o,) if deep else (a, *o))], 1)

    with torch.no_grad():   # the standardisation of the pooled features at the recogniser's own tail (constants)
        # in chunks: the tail keeps every intermediate tensor, 3,000 rows at once need ~7 GB from 462, ~20 GB from 440
        P = torch.cat([pooled(train[0][i:i + 500].float()) for i in range(0, min(3000, len(train[0])), 500)])
        mu, sd = P.mean(0), P.std(0) + 1e-6

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tail = tail
            self.w = nn.Parameter(torch.tensor(w0) * sd)
            self.b = nn.Parameter(torch.tensor(float(b0) + float((torch.tensor(w0) * mu).sum())))
            self.emo = nn.Linear(len(mu), 8) if aux > 0 else None

        def forward(self, a, with_emotions: bool = False):
            a = a.float()
            f = (pooled(a) - mu) / sd
            z = f @ self.w + self.b
            return (z, self.emo(f)) if with_emotions else z

    net = Net()
    groups = [{"params": net.tail.parameters(), "lr": lr, "weight_decay": 1e-4},
              {"params": [net.w, net.b], "lr": lr, "weight_decay": 0.0}]
    if aux > 0:
        groups.append({"params": net.emo.parameters(), "lr": 10 * lr, "weight_decay": 1e-4})
    opt = torch.optim.AdamW(groups)
    per_epoch = (len(y) + batch - 1) // batch
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    fv = np.flatnonzero(masks["fer_valid"] & usable)
    lc = np.flatnonzero(masks["lfw_calib"] & (lfw["smile"] >= 0))
    monitors = (("ferplus_valid", views[0][0], fv, share[fv] >= 0.5),
                ("lfw_calibration_people", views[0][1], lc, lfw["smile"][lc] == 1))

    def monitor(epoch: int) -> dict:
        net.eval()
        rec = {"epoch": epoch}
        with torch.no_grad():
            for nm, A, ix, yy in monitors:
                s = np.concatenate([net(torch.from_numpy(np.asarray(A[ix[i:i + 512]]))).numpy()
                                    for i in range(0, len(ix), 512)])
                neg = np.sort(s[~yy])[::-1]
                t = neg[int(np.floor(0.02 * len(neg)))]
                rec[nm] = {"auc": round(float(roc_auc_score(yy, s)), 4), "smiles_at_2pct": round(float((s[yy] > t).mean()), 4)}
        net.train()
        return rec

    first, history = 0, []
    done = sorted(ck_dir.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if done:
        state = torch.load(done[-1], weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        first, history = int(state["epoch"]), list(state["history"])
        log.info("resumed from %s", done[-1])
    if not history:
        history.append(monitor(0))
    from tqdm import tqdm

    t0 = time.time()
    for ep in range(first, epochs):
        perm = torch.randperm(len(y))
        total = 0.0
        bar = tqdm(range(0, len(y), batch), disable=not progress, desc=f"smile tail epoch {ep + 1}/{epochs}",
                   mininterval=5)
        for i in bar:
            j = perm[i:i + batch]
            src = train[rng.randint(len(train))]
            if aux > 0:
                z, e = net(src[j], with_emotions=True)
                loss = nn.functional.binary_cross_entropy_with_logits(z, y[j])
                m = has_q[j]
                if bool(m.any()):
                    loss = loss + aux * -(q[j][m] * nn.functional.log_softmax(e[m], 1)).sum(1).mean()
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(net(src[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(j)
        history.append({**monitor(ep + 1), "train_loss": round(total / len(y), 5)})
        log.info("epoch %d: %s", ep + 1, history[-1])
        if progress:
            print(json.dumps(history[-1]), flush=True)
        tmp = ck_dir / "tmp.pt"
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "rng": rng.get_state(), "torch_rng": torch.get_rng_state(), "epoch": ep + 1,
                    "history": history}, tmp)
        os.replace(tmp, ck_dir / f"epoch_{ep + 1}.pt")
    sha = export_tail(net.tail, out, start=start, outputs=outputs)
    res = {"file": str(out), "sha256": sha, "size": Path(out).stat().st_size, "epochs": epochs, "lr": lr,
           "batch": batch, "flip": flip, "seed": seed, "aux_emotions": aux, "start": start,
           "outputs": list(outputs),
           "rows": {"ferplus_train": int(len(fi)), "lfw_train_people": int(len(li))},
           "history": history, "seconds": round(time.time() - t0, 1)}
    (ck_dir / "summary.json").write_text(json.dumps(res, indent=1))
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="fine-tune the smile tail (smile2pay_tools.train.smile_tail)")
    ap.add_argument("--run", default="results/au3", help="train-au folder whose cache/ holds the training sources")
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[3] / "smile2pay" / "models" / "weights" / TAIL_FILE))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-flip", action="store_true", help="no mirrored copies of the training rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aux-emotions", type=float, default=0.0, metavar="WEIGHT",
                    help="weight of an auxiliary 8-way FER+ emotion-vote task on the same features (0: none)")
    ap.add_argument("--tag", default="", help="checkpoints in RUN/smile_tail_s<START>_TAG (an experiment beside the "
                    "shipped run's)")
    ap.add_argument("--start", default=DEFAULT_START,
                    help=f"the recogniser tensor the tail starts from (default {DEFAULT_START}, what ships; {START}: the "
                         "v3 tail, one block shorter)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = train_tail(args.run, args.data, args.models, args.out, epochs=args.epochs, lr=args.lr,
                     flip=not args.no_flip, seed=args.seed, progress=not args.no_progress,
                     aux=args.aux_emotions, tag=args.tag, start=args.start)
    print(f"smile tail written to {res['file']} (sha256 {res['sha256']})")
    return res


if __name__ == "__main__":
    main()
