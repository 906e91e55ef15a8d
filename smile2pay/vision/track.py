"""Cheap per-frame continuity for "identity only where it decides" (issue: latency vs InsightFace).

The identity embedding (w600k_mbf, ~17-21 ms a crop on one core) is the most expensive stage of a
frame. A burst or a stream needs the claimed person in *every* frame, but a face that stays in place
from one frame to the next (box IoU) is the same face: frames are therefore linked into tracks, the
embedding runs on the frames the decision uses (the neutral and the smile frame), and every other
frame is covered by a track link to an identity-checked frame. A frame that no link connects to an
identity-checked frame is embedded itself, so no frame is ever left without an identity check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


# ------------------------------------------------------------------ detection in a window (bursts)
#: the window's side, in face sides (the face's box long side): half a face of margin on each side. A face
#: that moves by half its size between frames no longer links (box IoU < LINK_IOU) anyway.
WINDOW_CONTEXT = 2.0
#: the smallest detector input of a window (the network's largest stride is 32)
WINDOW_MIN_SIZE = 64
#: another face at least this fraction of the user's face height is someone beside the user, not a queue
#: behind (a face half the size is about twice as far from the camera): a burst's first look must be able to
#: see such a face, and a stream frame holding one is not judged (StreamSettings.near_face_ratio)
NEAR_FACE_RATIO = 0.5
#: face height in detector pixels from which SCRFD-500M finds a face reliably: LFW faces on a 640x480 canvas,
#: found 98.9 % (185 / 187) at 32-40 px and 100 % (225 / 225) at 40-56 px with a 128 input, 98.4 % / 100 % at 160;
#: 24-28 px: 97.6 % / 95.2 %; 16-20 px: 56 % / 44 % (benchmarks/detect_min_face.py, 2026-12-07)
SEEN_FACE_PX = 32
#: a burst's first look decides only when nothing else in the frame scores even this much: a face cut by the
#: image edge or half hidden scores 0.23-0.47 at the look's small input where the ladder's 320 gives it 0.54-0.69
#: (LFW Kwon_Yang-sook_0003, Martha_Stewart_0003, Gunter_Pleuger_0002: second faces 0.5-0.9 of the user's height),
#: so any such candidate sends the frame to the ladder
FAINT_FACE_SCORE = 0.2


@dataclass(frozen=True)
class Window:
    """A region of the frame (source pixels, x2/y2 exclusive) and the detector input size it runs at.

    A burst detects its first frame on the whole frame (the ladder, and the check for a second face), then
    every frame, the first included, inside one window around that face at a scale that puts the face at
    about ``face_px`` detector pixels. One window and one scale for all frames keeps the landmarks of a
    still face on the same detector grid from frame to frame: landmarks from two different crops or scales
    of the same image differ by ~5 % of the inter-ocular distance (measured on CK+ camera-like frames),
    enough to move AU probabilities by 0.1, whereas one window repeats them within 0.6 %."""

    x1: int
    y1: int
    x2: int
    y2: int
    size: int
    #: (height, width) of the frame the window was cut for; a frame of another size is searched whole
    frame: tuple[int, int] = (0, 0)

    def fits(self, image_shape) -> bool:
        """The window was made for a frame of this size."""
        return (int(image_shape[0]), int(image_shape[1])) == tuple(self.frame)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y2 - self.y1, self.x2 - self.x1

    def contains(self, box, image_shape, margin: float = 0.05) -> bool:
        """``box`` lies inside the window, at least ``margin`` x the window's side away from every window
        edge that is not also an edge of the image (a face cut by the window's edge is not a whole face)."""
        h, w = image_shape[:2]
        m = margin * max(self.x2 - self.x1, self.y2 - self.y1)
        x1, y1, x2, y2 = (float(v) for v in box)
        return ((self.x1 == 0 or x1 >= self.x1 + m) and (self.y1 == 0 or y1 >= self.y1 + m)
                and (self.x2 >= w or x2 <= self.x2 - m) and (self.y2 >= h or y2 <= self.y2 - m))


def window_around(box, image_shape, face_px: int, *, context: float = WINDOW_CONTEXT,
                  max_size: int = 640) -> Window | None:
    """The detection window for a face at ``box`` (x1 y1 x2 y2) in an image of ``image_shape``: a square of
    ``context`` face sides centred on the face, cut to the image, and the detector input size (a multiple
    of 32, ``WINDOW_MIN_SIZE``..``max_size``) at which the face's long side is about ``face_px`` pixels,
    never upscaling the window above its own size unless it is smaller than ``WINDOW_MIN_SIZE``. None for a
    degenerate box."""
    h, w = int(image_shape[0]), int(image_shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1)
    if not (x2 - x1 > 1.0 and y2 - y1 > 1.0) or face_px <= 0 or not all(map(math.isfinite, (x1, y1, x2, y2))):
        return None
    cx, cy, half = (x1 + x2) / 2.0, (y1 + y2) / 2.0, context * side / 2.0
    wx1, wy1 = max(0, int(math.floor(cx - half))), max(0, int(math.floor(cy - half)))
    wx2, wy2 = min(w, int(math.ceil(cx + half))), min(h, int(math.ceil(cy + half)))
    if wx2 - wx1 < 8 or wy2 - wy1 < 8:
        return None
    long_side = max(wx2 - wx1, wy2 - wy1)
    size = min(float(long_side), face_px * long_side / side)
    size = int(min(max_size, max(WINDOW_MIN_SIZE, math.ceil(size / 32.0) * 32)))
    return Window(wx1, wy1, wx2, wy2, size, (h, w))


__all__ = ["LINK_IOU", "box_iou", "linked", "frames_to_embed", "chain_of", "carried_scores",
           "WINDOW_CONTEXT", "WINDOW_MIN_SIZE", "NEAR_FACE_RATIO", "SEEN_FACE_PX", "FAINT_FACE_SCORE",
           "Window", "window_around"]
