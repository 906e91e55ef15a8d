"""The clipped logit and the sigmoid every AU fusion and rise uses (NumPy, scalars or arrays).

Probabilities are clipped to [:data:`PROB_CLIP`, 1 - :data:`PROB_CLIP`] before the logit, so a model output of
exactly 0 or 1 gives a finite logit (about +-13.8). The decision engine's scalar copy
(``smile2pay.decision.engine._logit``) uses the same clip."""
from __future__ import annotations

import numpy as np

PROB_CLIP = 1e-6


def logit(p):
    """``log(p / (1 - p))`` of ``p`` clipped to [PROB_CLIP, 1 - PROB_CLIP], as float64."""
    c = np.clip(np.asarray(p, np.float64), PROB_CLIP, 1.0 - PROB_CLIP)
    return np.log(c / (1.0 - c))


def sigmoid(x):
    """``1 / (1 + exp(-x))`` as float64; saturates to 0 / 1 without an overflow warning."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
