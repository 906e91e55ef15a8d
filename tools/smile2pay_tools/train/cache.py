"""Build the AU training cache: detect + align every image once, run the blendshape teacher.

The cache (an ``.npz`` in an ignored folder, never committed: it holds derived image arrays of
restricted datasets) stores per sample: the 112x112 AU crop (uint8 BGR, ``norm_crop`` pad 0.15, the
same crop the runtime makes), the 52 teacher blendshapes, the identity embedding (optional), the
subject id, the AU set and the source. Samples with no detected face are dropped and counted.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..datasets import AUSample

log = logging.getLogger(__name__)


def make_teacher(models_dir: str | Path, threads: int = 1):
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.au import BlendshapeTeacher

    d = Path(models_dir)
    lm = create_session(d / "mediapipe_face_landmarks_478.onnx", threads=threads, name="mp_landmarks")[0]
    bs = create_session(d / "mediapipe_face_blendshapes.onnx", threads=threads, name="mp_blendshapes")[0]
    return BlendshapeTeacher(lm, bs)


def build_cache(samples: list[AUSample], out: str | Path, pipeline, teacher=None, identity: bool = True,
                crop_size: int = 112, pad: float = 0.15, progress: bool = True) -> dict:
    from tqdm import tqdm

    from smile2pay.errors import Smile2PayError
    from smile2pay.vision.align import norm_crop

    crops, bss, ids, keep = [], [], [], []
    t0 = time.time()
    missed = 0
    for i, s in enumerate(tqdm(samples, disable=not progress, desc=f"cache {Path(out).name}", mininterval=5)):
        try:
            img = pipeline.load(s.path)
        except Smile2PayError:
            missed += 1
            continue
        faces = pipeline.faces(img, pipeline.detect(img))
        if not faces:
            missed += 1
            continue
        cy, cx = img.shape[0] / 2.0, img.shape[1] / 2.0
        f = min(faces, key=lambda f: ((f.bbox[0] + f.bbox[2]) / 2 - cx) ** 2 + ((f.bbox[1] + f.bbox[3]) / 2 - cy) ** 2)
        crops.append(norm_crop(img, f.landmarks, size=crop_size, pad=pad))
        bss.append(teacher.blendshapes(img, f.bbox, f.landmarks) if teacher is not None else np.zeros(52, np.float32))
        if identity:
            pipeline.embed([f])
            ids.append(f.embedding.astype(np.float16))
        keep.append(i)
    kept = [samples[i] for i in keep]
    arrays = dict(
        crops=np.stack(crops).astype(np.uint8),
        blendshapes=np.stack(bss).astype(np.float32),
        subject=np.array([s.subject for s in kept]),
        sequence=np.array([s.sequence for s in kept]),
        label=np.array([s.label for s in kept]),
        source=np.array([s.source for s in kept]),
        path=np.array([s.path for s in kept]),
        neutral=np.array([s.neutral for s in kept]),
        aus=np.array([";".join(map(str, sorted(s.aus))) for s in kept]),
    )
    if identity:
        arrays["identity"] = np.stack(ids)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    info = {"n": len(kept), "missed": missed, "seconds": round(time.time() - t0, 1)}
    log.info("cache %s: %s", out, info)
    return info


def load_cache(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
