"""Cheap per-frame continuity for "identity only where it decides" (issue: latency vs InsightFace).

The identity embedding (w600k_mbf, ~17-21 ms a crop on one core) is the most expensive stage of a
frame. A burst or a stream needs the claimed person in *every* frame, but a face that stays in place
from one frame to the next (box IoU) is the same face: frames are therefore linked into tracks, the
embedding runs on the frames the decision uses (the neutral and the smile frame), and every other
frame is covered by a track link to an identity-checked frame. A frame that no link connects to an
identity-checked frame is embedded itself, so no frame is ever left without an identity check.
"""
from __future__ import annotations

#: box IoU between consecutive frames that links them to the same face (the stream keeps a track at 0.3;
#: a burst is a fraction of a second long, so a stricter link is free)
LINK_IOU = 0.5


def box_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(ax2 - ax1, 0) * max(ay2 - ay1, 0) + max(bx2 - bx1, 0) * max(by2 - by1, 0) - inter
    return inter / union if union > 0 else 0.0


def linked(a, b, min_iou: float = LINK_IOU) -> bool:
    """Two consecutive faces (``Face`` objects) are the same face: their boxes overlap by ``min_iou``."""
    return a is not None and b is not None and box_iou(a.bbox, b.bbox) >= min_iou


def frames_to_embed(faces: list, anchors: set[int], min_iou: float = LINK_IOU) -> list[int]:
    """Indices to embed so that every face is either embedded or linked (through consecutive linked
    faces) to an embedded one: the ``anchors`` plus every frame of a chain that holds no anchor.
    ``faces[i]`` is None for a frame without a usable face (nothing to embed there)."""
    n = len(faces)
    out = set(i for i in anchors if 0 <= i < n and faces[i] is not None)
    i = 0
    while i < n:
        if faces[i] is None:
            i += 1
            continue
        j = i
        while j + 1 < n and linked(faces[j], faces[j + 1], min_iou):
            j += 1
        chain = range(i, j + 1)
        if not any(k in out for k in chain):
            out.update(chain)
        i = j + 1
    return sorted(out)


def chain_of(faces: list, i: int, min_iou: float = LINK_IOU) -> range:
    """The chain of consecutive linked faces that holds frame ``i``."""
    lo = hi = i
    while lo > 0 and linked(faces[lo - 1], faces[lo], min_iou):
        lo -= 1
    while hi + 1 < len(faces) and linked(faces[hi], faces[hi + 1], min_iou):
        hi += 1
    return range(lo, hi + 1)


def carried_scores(faces: list, scores: dict[int, float], min_iou: float = LINK_IOU) -> list[float | None]:
    """Per frame: its own identity score where embedded, else the lowest score of the embedded frames of
    its chain (the identity it is tracked from; the lowest, so a track never scores better than its
    weakest check). None for a frame without a face."""
    out: list[float | None] = []
    for i, f in enumerate(faces):
        if f is None:
            out.append(None)
        elif i in scores:
            out.append(float(scores[i]))
        else:
            got = [scores[k] for k in chain_of(faces, i, min_iou) if k in scores]
            out.append(float(min(got)) if got else None)
    return out


__all__ = ["LINK_IOU", "box_iou", "linked", "frames_to_embed", "chain_of", "carried_scores"]
