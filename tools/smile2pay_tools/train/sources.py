"""Training/evaluation sources with breadth for the AU model: FER+ (in the wild, ten-annotator votes) and
LFW (news photos, crowd expression labels), next to CK+ (the only AU ground truth).

Each source is cached once (detect -> AU crop -> blendshape teacher) in an ignored folder, in parallel
worker processes (``workers``), then merged into one ``.npz`` with the labels joined back by path:

* ``ferplus.npz``: ``split`` (FER2013Train / FER2013Valid / FER2013Test), the 10 vote columns
  (:data:`FER_VOTES`), ``pixel_md5`` (md5 of the decoded grey pixels: FER2013 holds byte-identical
  duplicates across its splits, see :func:`dedup_test_mask`);
* ``lfw.npz``: ``subject`` (the person), ``label`` (muxspace expression), ``smile`` (Morishita 0/1, -1 unknown).

Nothing here is ever committed: the caches hold derived arrays of restricted datasets.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import multiprocessing as mp
import time
import zlib
from pathlib import Path

import numpy as np

from ..datasets import AUSample

log = logging.getLogger(__name__)

FER_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ferplus_rows(data_dir) -> list[dict]:
    return _read(Path(data_dir) / "ferplus" / "manifest.csv")


def lfw_rows(data_dir) -> list[dict]:
    return _read(Path(data_dir) / "lfw" / "manifest.csv")


LFW_ROLES = ("test", "test", "calib", "train")


def lfw_role(name: str) -> str:
    """Stable person-level split of LFW by ``crc32(name) % 4``: half of the people are held out for the
    report (``test``), a quarter calibrates the decision (``calib``), a quarter may be used in training
    (``train``). Never an image-level split (one person's photos share days, lighting and cameras)."""
    return LFW_ROLES[zlib.crc32(name.encode("utf-8")) % 4]


def _worker(args):
    samples, out, models_dir, teacher_on = args
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline
    from .cache import build_cache, make_teacher

    pipe = FacePipeline(Settings.from_env(models=str(models_dir)))
    teacher = make_teacher(models_dir) if teacher_on else None
    return build_cache(samples, out, pipe, teacher, identity=False, progress=False)


def build_parallel(samples: list[AUSample], out: str | Path, models_dir, workers: int = 2, teacher: bool = True,
                   progress: bool = True) -> dict:
    """:func:`smile2pay_tools.train.cache.build_cache` over ``workers`` processes, merged into ``out``."""
    from tqdm import tqdm

    from .cache import load_cache

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chunks = max(1, workers) * 8
    parts = [out.with_name(f"{out.stem}.part{i}.npz") for i in range(chunks)]
    jobs = [(samples[i::chunks], parts[i], str(models_dir), teacher) for i in range(chunks)]
    todo = [j for j in jobs if not Path(j[1]).is_file()]          # resumable: finished parts are kept
    t0 = time.time()
    if todo:
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, workers)) as pool:
            for _ in tqdm(pool.imap_unordered(_worker, todo), total=len(todo), disable=not progress,
                          desc=f"cache {out.name}"):
                pass
    merged: dict[str, list] = {}
    for p in parts:
        d = load_cache(p)
        for k, v in d.items():
            merged.setdefault(k, []).append(v)
    arrays = {k: np.concatenate(v) for k, v in merged.items()}
    np.savez(out, **arrays)
    for p in parts:
        p.unlink()
    info = {"n": int(len(arrays["path"])), "requested": len(samples), "seconds": round(time.time() - t0, 1)}
    log.info("cache %s: %s", out, info)
    return info


def _join(cache: dict, rows: list[dict], data_dir: Path, cols) -> dict:
    """Join the label ``cols`` of ``rows`` onto the cache's faces. A cache stores each image's path as spelled when
    it was built (``../shared/data/...`` or ``/abs/.../data/...``), so faces are matched on the path inside the data
    folder (the row's own relative path), and the cache's paths are respelled under ``data_dir``: a cache built
    with a relative data folder still serves a run given the absolute one, and the other way round."""
    by_rel = {Path(r["path"]).as_posix(): r for r in rows}
    depths = sorted({len(Path(k).parts) for k in by_rel})
    picked = []
    for p in cache["path"]:
        parts = Path(str(p)).parts
        hit = next((by_rel[k] for k in ("/".join(parts[-d:]) for d in depths if d <= len(parts)) if k in by_rel), None)
        if hit is None:
            raise ValueError(f"cache face {p} is not in the data folder {data_dir}: the cache was built from other "
                             f"data; delete the cache folder to rebuild it")
        picked.append(hit)
    cache["path"] = np.array([str(data_dir / r["path"]) for r in picked])
    for c in cols:
        cache[c] = np.array([r[c] for r in picked])
    return cache


def _source_cache(data_dir: Path, models_dir, path: Path, rows: list[dict], sample, cols, workers: int,
                  progress: bool) -> dict:
    """Build ``path`` from ``rows`` (``sample(row)`` -> AUSample) once, load it, join the label ``cols`` back."""
    from .cache import load_cache

    if not path.is_file():
        build_parallel([sample(r) for r in rows], path, models_dir, workers, teacher=True, progress=progress)
    c = _join(load_cache(path), rows, data_dir, cols)
    c["n_requested"] = len(rows)
    return c


def ferplus_cache(data_dir, models_dir, cache_dir, workers: int = 2, progress: bool = True) -> dict:
    data_dir = Path(data_dir)
    path = Path(cache_dir) / "ferplus.npz"
    c = _source_cache(data_dir, models_dir, path, ferplus_rows(data_dir),
                      lambda r: AUSample(str(data_dir / r["path"]), "", frozenset(), "ferplus", "", r["ferplus_majority"]),
                      ["split"] + [f"votes_{v}" for v in FER_VOTES], workers, progress)
    c["votes"] = np.stack([c.pop(f"votes_{v}").astype(np.float32) for v in FER_VOTES], 1)
    c["pixel_md5"] = _pixel_md5s(path.with_name("ferplus_md5.npz"), c["path"])
    return c


def lfw_cache(data_dir, models_dir, cache_dir, workers: int = 2, progress: bool = True) -> dict:
    data_dir = Path(data_dir)
    c = _source_cache(data_dir, models_dir, Path(cache_dir) / "lfw_all.npz", lfw_rows(data_dir),
                      lambda r: AUSample(str(data_dir / r["path"]), r["subject"], frozenset(), "lfw", "", r["label"]),
                      ["smile_morishita"], workers, progress)
    c["smile"] = np.array([int(v) if v in ("0", "1") else -1 for v in c.pop("smile_morishita")])
    c["role"] = np.array([lfw_role(s) for s in c["subject"]])
    return c


def _pixel_md5s(store: Path, paths: np.ndarray) -> np.ndarray:
    """md5 of each image's decoded pixels, kept beside the cache (every load would otherwise re-read every file)."""
    if store.is_file():
        with np.load(store, allow_pickle=False) as z:
            if np.array_equal(z["path"], paths):
                return z["md5"]
    md5 = np.array([pixel_md5(p) for p in paths])
    np.savez(store, path=paths, md5=md5)
    return md5


def pixel_md5(path: str) -> str:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return hashlib.md5(img.tobytes()).hexdigest() if img is not None else ""


def dedup_test_mask(split: np.ndarray, md5: np.ndarray, test: str = "FER2013Test",
                    train_splits=("FER2013Train", "FER2013Valid")) -> np.ndarray:
    """Test images to report on: not pixel-identical to any training-split image, one per duplicate group."""
    seen_train = set(md5[np.isin(split, list(train_splits))])
    keep = np.zeros(len(split), bool)
    seen = set()
    for i in np.flatnonzero(split == test):
        h = md5[i]
        if h in seen_train or h in seen:
            continue
        seen.add(h)
        keep[i] = True
    return keep


def dedup_train_mask(split: np.ndarray, md5: np.ndarray, train_splits=("FER2013Train", "FER2013Valid"),
                     test: str = "FER2013Test") -> np.ndarray:
    """Training images: in a training split and not pixel-identical to any test image."""
    test_h = set(md5[split == test])
    return np.isin(split, list(train_splits)) & ~np.isin(md5, list(test_h))
