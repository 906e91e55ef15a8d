"""How well the labels themselves agree: the ceiling a smile gate is measured against.

FER+ gives ten annotators' votes per face. The protocol's truth is the majority of the eight emotion columns
(smile = "happiness", usable votes only: :func:`smile2pay_tools.train.au_mix.fer_smile_target`). One human
annotator, judged against the majority of the *other nine*, is a reference for what "right" can mean on these
labels; the gate's fixed decisions are judged against the same nine-vote truth so that both stand on the same
footing (each face weighted by the probability of each dropped vote).

LFW has two independent label sources on part of its images (muxspace expression labels, Morishita's smile
labels): :func:`lfw_agreement` counts how often they disagree on what the gate's protocol calls a smile and an
"other" expression.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

HAPPINESS = 1        # FER+ vote column of "happiness"
EMOTIONS = 8         # the first eight columns are emotions (then "unknown", "not a face")


def _leave_one_out(votes: np.ndarray):
    """Per face and dropped vote column k: (face, k, probability of dropping a vote of k, truth from the rest)."""
    V = np.asarray(votes, np.int64)
    n = V.sum(1)
    for i in range(len(V)):
        for k in np.flatnonzero(V[i]):
            r = V[i].copy()
            r[k] -= 1
            if r[:EMOTIONS].sum() == 0:
                continue
            yield i, int(k), V[i, k] / n[i], bool(r[:EMOTIONS].argmax() == HAPPINESS)


def _rates(tp, fn, fp, tn) -> dict:
    return {"tpr": round(tp / (tp + fn), 4) if tp + fn else None,
            "fpr": round(fp / (fp + tn), 4) if fp + tn else None,
            "smiles_weight": round(tp + fn, 2), "others_weight": round(fp + tn, 2)}


def one_annotator(votes: np.ndarray) -> dict:
    """Expected smile / other pass rates of one annotator's vote ("happiness" = passes) against the majority of
    the other nine."""
    c = np.zeros(4)
    for _, k, p, truth in _leave_one_out(votes):
        says = k == HAPPINESS
        c[0 if truth and says else 1 if truth else 2 if says else 3] += p
    return _rates(*c)


def decisions_vs_rest(votes: np.ndarray, passed: np.ndarray) -> dict:
    """Expected pass rates of fixed per-face decisions against the same leave-one-vote-out truth as
    :func:`one_annotator`."""
    passed = np.asarray(passed, bool)
    if len(passed) != len(votes):
        raise ValueError("one decision per face")
    c = np.zeros(4)
    for i, _, p, truth in _leave_one_out(votes):
        c[0 if truth and passed[i] else 1 if truth else 2 if passed[i] else 3] += p
    return _rates(*c)


def lfw_agreement(labels, smile, mask=None, other=("surprise", "anger", "sadness", "disgust", "fear",
                                                      "contempt")) -> dict:
    """Images with both LFW label sources: muxspace's expression ``labels`` and Morishita's ``smile`` (1 smile,
    0 neutral, -1 none). Counts per (muxspace, Morishita) and the two disagreements the gate meets: muxspace
    "happiness" that Morishita calls neutral, and muxspace other expressions that Morishita calls a smile."""
    labels, smile = np.asarray(labels).astype(str), np.asarray(smile).astype(int)
    m = (smile >= 0) & (labels != "")
    if mask is not None:
        m &= np.asarray(mask, bool)
    cnt = Counter(zip(labels[m].tolist(), smile[m].tolist()))
    happy = cnt[("happiness", 1)] + cnt[("happiness", 0)]
    oth = sum(v for (lab, _), v in cnt.items() if lab in other)
    oth_smile = sum(v for (lab, s), v in cnt.items() if lab in other and s == 1)
    return {"images_with_both": int(m.sum()),
            "counts": {f"{lab}/{'smile' if s else 'neutral'}": v for (lab, s), v in sorted(cnt.items())},
            "happiness_called_neutral": {"n": cnt[("happiness", 0)], "of": happy,
                                         "rate": round(cnt[("happiness", 0)] / happy, 4) if happy else None},
            "other_called_smile": {"n": oth_smile, "of": oth, "rate": round(oth_smile / oth, 4) if oth else None}}


NEUTRAL = 0          # FER+ vote column of "neutral"


def vote_groups(votes: np.ndarray, clear: float = 0.8) -> dict[str, np.ndarray]:
    """Boolean masks over FER+ faces by how far the annotators agree (shares of the eight emotion votes): the
    majority split the gate is reported on, and the faces on which the humans agree or not. A face with no
    emotion vote belongs to no group but the majority's "others" (``argmax`` of zeros is neutral)."""
    emo = np.asarray(votes, np.float64)[:, :EMOTIONS]
    total = emo.sum(1)
    happy = emo[:, HAPPINESS]
    major = emo.argmax(1)
    voted = total > 0
    return {
        "smiles (happiness majority)": major == HAPPINESS,
        "others (any other majority)": major != HAPPINESS,
        f"clear smiles (>= {clear:.0%} of emotion votes happiness)": voted & (happy >= clear * total),
        f"contested smiles (happiness majority, < {clear:.0%})": (major == HAPPINESS) & (happy < clear * total),
        "others with some happiness votes": (major != HAPPINESS) & (happy > 0),
        "clear others (no happiness vote, majority neither happiness nor neutral)":
            voted & (happy == 0) & (major != HAPPINESS) & (major != NEUTRAL),
        f"clear neutral (no happiness vote, >= {clear:.0%} neutral)": voted & (happy == 0) & (emo[:, NEUTRAL] >= clear * total),
    }
