"""Batch enrolment: a folder (one sub-folder per user) or a CSV manifest (``user_id,image_path,kind``).

Embeddings are computed by ``workers`` processes (each one FacePipeline with 1 onnxruntime thread);
the parent process writes to the gallery, one transaction per user, in manifest order (so duplicate
detection is deterministic). Resumable: users already in the gallery are skipped, so re-running
after an interruption continues where it stopped (rejected and duplicate users are re-evaluated:
no record of them is kept outside the report). Progress (tqdm, with ETA) goes to stderr.
"""
from __future__ import annotations

import csv
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import FaceError, ImageError, RequestError, Smile2PayError
from ..reasons import NOT_NEUTRAL
from .base import DuplicateIdentityError, GalleryStore

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class UserTask:
    user_id: str
    images: list[tuple[str, str]] = field(default_factory=list)   # (path, kind)


def plan_folder(folder: str | os.PathLike, kind: str = "neutral") -> list[UserTask]:
    """One sub-folder per user; every image inside is a template. A file whose name starts with
    ``smile`` gets kind ``smile``; others get ``kind``."""
    root = Path(folder)
    if not root.is_dir():
        raise RequestError(f"enrolment folder not found: {root}", code="REQUEST_INVALID", path=str(root))
    tasks = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        imgs = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if imgs:
            tasks.append(UserTask(sub.name, [(str(p), "smile" if p.name.lower().startswith("smile") else kind)
                                             for p in imgs]))
    return tasks


def plan_manifest(manifest: str | os.PathLike, kind: str = "neutral") -> list[UserTask]:
    """CSV with a header ``user_id,image_path[,kind]``; relative paths are relative to the CSV."""
    path = Path(manifest)
    try:
        fh = open(path, newline="")
    except OSError as e:
        raise RequestError(f"cannot read manifest {path}: {e.strerror}", code="REQUEST_INVALID",
                           path=str(path)) from None
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"user_id", "image_path"} <= set(reader.fieldnames):
            raise RequestError("manifest needs the columns user_id,image_path[,kind]", code="REQUEST_INVALID",
                               columns=reader.fieldnames)
        tasks: dict[str, UserTask] = {}
        for i, row in enumerate(reader, start=2):
            uid, img = (row.get("user_id") or "").strip(), (row.get("image_path") or "").strip()
            if not uid or not img:
                raise RequestError(f"manifest line {i}: empty user_id or image_path", code="REQUEST_INVALID",
                                   line=i)
            p = Path(img)
            if not p.is_absolute():
                p = path.parent / p
            tasks.setdefault(uid, UserTask(uid)).images.append((str(p), (row.get("kind") or kind).strip()))
    return list(tasks.values())


# -- worker side ---------------------------------------------------------------------------------
_PIPE = None
_PICK = "error"


def _init_worker(settings, pick: str) -> None:
    global _PIPE, _PICK
    from ..pipeline import FacePipeline

    _PIPE = FacePipeline(settings)
    _PICK = pick


def _embed_user(task: UserTask) -> tuple[str, list[dict]]:
    c0 = time.process_time()
    out = []
    for path, kind in task.images:
        r: dict[str, Any] = {"image": path, "kind": kind}
        try:
            f = _PIPE.single(path, pick=_PICK)
            r["reasons"] = list(f.quality.reasons)
            r["embedding"] = f.embedding
            r["au_probs"] = baseline_probs(f)
            r["au_embedding"] = None if f.au_embedding is None else np.asarray(f.au_embedding, np.float32)
        except (FaceError, ImageError) as e:
            r["code"], r["reasons"] = e.code, [e.code]
        out.append(r)
    out[-1]["_cpu_s"] = time.process_time() - c0   # this process's CPU time for the user (contention-free cost)
    return task.user_id, out


def baseline_probs(face) -> dict[str, float]:
    """What a neutral face contributes to the user's AU baseline: its AU probabilities and, when the face was
    embedded with the pack's smile probe, the probe's logit under the key ``smile_probe`` (the decision judges a
    smile against the baseline on the scale it judges the frames on: smile2pay.decision.engine.judged_baseline)."""
    p = dict(face.au_probs or {})
    if p and getattr(face, "smile_probe", None) is not None:
        p["smile_probe"] = float(face.smile_probe)
    return p


def neutral_baseline(neutral_au: list[tuple[dict, Any]]) -> tuple[dict, Any] | None:
    """The personal AU baseline from a user's neutral faces: mean AU probabilities and the normalised
    mean AU embedding (None when there is none)."""
    if not neutral_au:
        return None
    keys = sorted(set().union(*(p for p, _ in neutral_au)))
    probs = {k: float(np.mean([p.get(k, 0.0) for p, _ in neutral_au])) for k in keys}
    au_embs = [e for _, e in neutral_au if e is not None]
    emb = None
    if au_embs:
        m = np.mean(au_embs, axis=0)
        emb = m / max(float(np.linalg.norm(m)), 1e-12)
    return probs, emb


def run_batch(gallery: GalleryStore, tasks: list[UserTask], settings, *, workers: int = 2, pick: str = "error",
              mode: str = "new", require_quality: bool = True, check_duplicates: bool = True,
              progress: bool = True, limit: int | None = None,
              on_user: Callable[[str, str], None] | None = None, threshold: float | None = None,
              shows_smile: Callable[[dict], bool] | None = None) -> dict[str, Any]:
    """Enrol ``tasks`` into ``gallery``; returns the JSON summary report. Each user's templates and AU
    baseline (from the neutral images) are written in one transaction; with ``shows_smile`` a "neutral"
    image that shows the smile pattern is rejected (``NOT_NEUTRAL``). ``threshold``: the duplicate check's."""
    import dataclasses

    settings = dataclasses.replace(settings, threads=1)
    todo = [t for t in tasks if not (mode == "new" and t.user_id in gallery)]
    skipped = [t.user_id for t in tasks if mode == "new" and t.user_id in gallery]
    if limit is not None:
        todo = todo[:limit]
    n_images = sum(len(t.images) for t in todo)
    report: dict[str, Any] = {"users_total": len(tasks), "skipped_already_enrolled": len(skipped),
                              "enrolled": [], "rejected": [], "duplicates": [], "errors": [],
                              "images": n_images, "workers": workers}
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=n_images, unit="img", desc="enrol", file=sys.stderr, disable=not progress)
    if workers > 1:
        ctx = mp.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(settings, pick))
        results: Iterable = pool.imap(_embed_user, todo, chunksize=1)
    else:
        pool = None
        _init_worker(settings, pick)
        results = map(_embed_user, todo)
    cpu_s = 0.0
    try:
        for uid, imgs in results:
            cpu_s += imgs[-1].pop("_cpu_s", 0.0)
            bar.update(len(imgs))
            for r in imgs:
                if ("embedding" in r and r["kind"] == "neutral" and shows_smile is not None
                        and shows_smile(r.get("au_probs"))):
                    r["reasons"] = list(r.get("reasons", [])) + [NOT_NEUTRAL]
                    del r["embedding"]
            good = [r for r in imgs if "embedding" in r and (not require_quality or not r["reasons"])]
            bad = [{"image": r["image"], "reasons": r["reasons"]} for r in imgs if r not in good]
            if not good:
                report["rejected"].append({"user_id": uid, "images": bad})
                outcome = "rejected"
            else:
                import numpy as np

                try:
                    base = neutral_baseline([(r["au_probs"], r.get("au_embedding")) for r in good
                                             if r["kind"] == "neutral" and r.get("au_probs")])
                    res = gallery.enroll(uid, np.stack([r["embedding"] for r in good]), [r["kind"] for r in good],
                                         mode=mode, check_duplicates=check_duplicates, threshold=threshold,
                                         baseline=base)
                    report["enrolled"].append({"user_id": uid, "templates": len(res.template_ids),
                                               "rejected_images": bad})
                    outcome = "enrolled"
                except DuplicateIdentityError as e:
                    report["duplicates"].append({"user_id": uid, "duplicate_of": e.details["duplicate_of"],
                                                 "score": e.details["score"]})
                    outcome = "duplicate"
                except Smile2PayError as e:
                    report["errors"].append({"user_id": uid, "code": e.code, "message": e.message})
                    outcome = "error"
            if on_user is not None:
                on_user(uid, outcome)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    wall = time.perf_counter() - t0
    report["wall_s"] = round(wall, 2)
    report["images_per_s"] = round(n_images / wall, 2) if wall > 0 else None
    report["worker_cpu_s"] = round(cpu_s, 2)
    # what the same work costs in CPU: on a machine shared with other jobs the wall-clock rate understates
    # the enroller; images per CPU-second x workers is the rate with `workers` free cores
    report["images_per_cpu_s"] = round(n_images / cpu_s, 2) if cpu_s > 0 else None
    report["counts"] = {k: len(report[k]) for k in ("enrolled", "rejected", "duplicates", "errors")}
    report["counts"]["skipped_already_enrolled"] = len(skipped)
    report["gallery_users"] = gallery.count()
    return report
