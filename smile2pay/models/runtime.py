"""The one place that creates onnxruntime sessions.

Threads, thread spinning and execution providers are set here. On a small CPU
two sessions with ORT's default spinning fight for the cores (measured: slower
on 2 threads than on 1), so spinning is off and one intra-op thread is the
default. A provider the user asked for but that is not available is reported
(a warning and :attr:`Session.fallback`), never silently dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class ProviderReport:
    requested: list[str]
    available: list[str]
    active: list[str]
    fallback: bool = field(default=False)
    rewrites: dict = field(default_factory=dict)  # smile2pay.models.graph: what was rewritten before loading

    def to_dict(self) -> dict:
        return {"requested": self.requested, "available": self.available, "active": self.active,
                "fallback": self.fallback, "rewrites": dict(self.rewrites)}


def session_options(threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: SCRFD's declared output shapes trigger harmless warnings
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def create_session(model: str | Path | bytes, *, threads: int = 1,
                   providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
                   name: str = "model", rewrite: bool = True):
    """Create an ``onnxruntime.InferenceSession``; returns ``(session, ProviderReport)``.

    ``rewrite``: apply :mod:`smile2pay.models.graph` (same function, faster CPU graph) in memory first.
    """
    import onnxruntime as ort

    requested = list(providers) or ["CPUExecutionProvider"]
    available = list(ort.get_available_providers())
    usable = [p for p in requested if p in available]
    if "CPUExecutionProvider" not in usable:
        usable.append("CPUExecutionProvider")
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning("%s: execution providers %s are not available in this onnxruntime build (%s); "
                    "falling back to %s", name, missing, available, usable)
    src = model if isinstance(model, bytes) else str(model)
    rewrites: dict = {}
    if rewrite:
        from .graph import optimized_bytes

        try:
            raw = model if isinstance(model, bytes) else Path(model).read_bytes()
            new, rep = optimized_bytes(raw)
            rewrites = rep.to_dict()
            if rep.prelu:
                src = new   # otherwise the path itself: a model with external data files still finds them
        except OSError as e:
            raise ModelError(f"cannot read {name} from {model}: {e}", code="MODEL_LOAD_FAILED", model=name) from e
        except Exception as e:  # not a parseable ONNX file: let onnxruntime say why, as without the rewrite
            log.debug("%s: graph rewrite skipped (%s)", name, e)
    try:
        sess = ort.InferenceSession(src, sess_options=session_options(threads), providers=usable)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
        raise ModelError(f"onnxruntime could not load {name}: {e}", code="MODEL_LOAD_FAILED",
                         model=name) from e
    active = list(sess.get_providers())
    fallback = bool(missing) or (requested[0] not in active[:1])
    if fallback and not missing:
        log.warning("%s: asked for %s but onnxruntime activated %s", name, requested, active)
    return sess, ProviderReport(requested, available, active, fallback, rewrites)

