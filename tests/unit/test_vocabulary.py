"""One vocabulary: every reason code, stream state and event is assigned once (smile2pay/reasons.py) and
every other module imports the name; detector names come from one registry; no module reaches into another
module's private members. Static checks over the package source (ast), plus the engine at run time.

Each scanner is run on a hand-written snippet first, so a scanner that finds nothing cannot pass by accident.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import smile2pay
from smile2pay import reasons
from smile2pay.vision.detect import DEFAULT_DETECTOR, DETECTORS

PKG = Path(smile2pay.__file__).resolve().parent
REPO = PKG.parent


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


TOOLS = REPO / "tools" / "smile2pay_tools"


def _sources() -> list[tuple[Path, str]]:
    """(path, text) of every module of the package and of the developer tooling (tools/smile2pay_tools)."""
    out = []
    for p in sorted(PKG.rglob("*.py")) + sorted(TOOLS.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        try:
            out.append((p, p.read_text()))
        except FileNotFoundError:  # pragma: no cover - a file moved while the scan ran
            continue
    return out


def _vocabulary() -> dict[str, str]:
    """value -> name for every ``NAME = "STRING"`` at the top level of reasons.py."""
    tree = ast.parse((PKG / "reasons.py").read_text())
    out: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            for t in node.targets:
                assert isinstance(t, ast.Name)
                assert node.value.value not in out, f"{node.value.value!r} assigned twice in reasons.py"
                out[node.value.value] = t.id
    return out


VOCAB = _vocabulary()


# ------------------------------------------------------------------------------------------ scanners
def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are bare expression statements (docstrings, attribute docs)."""
    return {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def _dunder_all_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``__all__ = [...]`` / ``__all__ += [...]`` (names, not codes)."""
    out = set()
    for n in ast.walk(tree):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            out |= {id(m) for m in ast.walk(n.value)}
    return out


def literal_hits(source: str, words) -> list[tuple[int, str]]:
    """(line, string) for every string literal in ``source`` equal to one of ``words`` (docstrings, comments
    and ``__all__`` aside; a word inside a longer string, e.g. a help text, is not a literal of it)."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree) | _dunder_all_nodes(tree)
    return sorted((n.lineno, n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in words
                  and id(n) not in skip)


def private_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, what) for every private name (``_x``, not dunder) of another smile2pay module this source
    imports (``from smile2pay.x import _y``, ``from .x import _y``) or reads off an imported module
    (``import smile2pay.x as m; m._y``, ``from . import x; x._y``)."""
    tree = ast.parse(source)
    pkg_parts = module.split(".")[:-1]
    hits, modules = [], set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg_parts[:len(pkg_parts) - (n.level - 1)] + (n.module.split(".") if n.module else [])
            else:
                base = (n.module or "").split(".")
            if base[:1] != ["smile2pay"]:
                continue
            for a in n.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    hits.append((n.lineno, f"from {'.'.join(base)} import {a.name}"))
                modules.add(a.asname or a.name)
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0] == "smile2pay":
                    modules.add(a.asname or a.name.split(".")[0])
    for n in ast.walk(tree):
        if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                and isinstance(n.value, ast.Name) and n.value.id in modules):
            hits.append((n.lineno, f"{n.value.id}.{n.attr}"))
    return sorted(hits)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] + ["__init__"]
    return ".".join(parts)


# --------------------------------------------------------- files other work is rewriting right now
# TODO(vocabulary): empty these once those rewrites land; every entry must still have a hit (stale
# entries fail), so the list only shrinks.
PENDING_LITERALS: dict[str, str] = {}
PENDING_DETECTOR_NAMES: dict[str, str] = {}
PENDING_PRIVATE: dict[str, str] = {}
#: where a detector's name may be typed: its class (vision/detect.py) and the manifest's model names
#: (the YuNet model file is called "yunet" there)
DETECTOR_NAME_HOMES = {"smile2pay/vision/detect.py", "smile2pay/models/manifest.py"}


def _pending(rel: str, table: dict) -> str | None:
    return next((k for k in table if rel == k or (k.endswith("/") and rel.startswith(k))), None)


def _scan(table: dict, finder) -> tuple[dict[str, list], dict[str, list]]:
    """(violations outside the pending table, hits inside it) per file."""
    bad, pending = {}, {}
    for p, text in _sources():
        rel = _rel(p)
        hits = finder(text, rel, p)
        if not hits:
            continue
        key = _pending(rel, table)
        if key is None:
            bad[rel] = hits
        else:
            pending.setdefault(key, []).extend(f"{rel}:{ln} {w}" for ln, w in hits)
    return bad, pending


def _check_pending_not_stale(table: dict, pending: dict) -> None:
    existing = [k for k in table if (REPO / k).exists()]
    stale = [k for k in existing if k not in pending]
    assert not stale, f"no longer needed in the pending list, remove: {stale}"


# ---------------------------------------------------------------------------------- scanner self-tests
def test_literal_scanner_finds_a_code_and_skips_docstrings():
    src = ('"""REPLAY in a module docstring."""\n'
           'def f(x):\n'
           '    """NO_FACE"""\n'
           '    # REPLAY in a comment\n'
           '    help = "declined with REPLAY"\n'
           '    return x == "REPLAY" or {"LOW_QUALITY": 1}\n'
           '__all__ = ["NO_FACE", "f"]\n')
    assert literal_hits(src, VOCAB) == [(6, "LOW_QUALITY"), (6, "REPLAY")]


def test_private_scanner_finds_imports_and_attributes():
    src = ("from .cli_gallery import _gallery_args, gallery_settings_from\n"
           "from smile2pay.pipeline import _pick\n"
           "from ..decision import engine\n"
           "from os.path import _get_sep\n"
           "x = engine._uniq([])\n"
           "y = self._private\n")
    hits = private_imports(src, "smile2pay.server.app")
    assert hits == [(1, "from smile2pay.server.cli_gallery import _gallery_args"),
                    (2, "from smile2pay.pipeline import _pick"), (5, "engine._uniq")]


# ----------------------------------------------------------------------------------------- reasons
def test_reasons_module_assigns_each_code_once_under_its_own_name():
    assert VOCAB, "reasons.py assigns no code"
    for value, name in VOCAB.items():
        assert value == name, f"reasons.{name} = {value!r}: a code's constant is spelt like its value"
        assert getattr(reasons, name) == value


def test_no_module_retypes_a_reason_code_or_state():
    """A code, quality reason, stream state or event as a string literal anywhere outside reasons.py."""
    def finder(text: str, rel: str, p: Path):
        return [] if rel == "smile2pay/reasons.py" else literal_hits(text, VOCAB)

    bad, pending = _scan(PENDING_LITERALS, finder)
    assert not bad, ("import these from smile2pay.reasons instead of typing them: "
                     + "; ".join(f"{f}: {hits}" for f, hits in bad.items()))
    _check_pending_not_stale(PENDING_LITERALS, pending)


def test_every_code_is_described_and_classified():
    """Every code in reasons.py is a described reason, a stream state or a stream event (one of them)."""
    states, events = set(reasons.STATES), set(reasons.EVENTS)
    described = set(reasons.DESCRIPTIONS)
    assert not (described & states) and not (described & events) and not (states & events)
    assert set(VOCAB) == described | states | events, \
        f"neither described nor a state/event: {sorted(set(VOCAB) - described - states - events)}"
    assert set(reasons.QUALITY_REASONS) <= described
    assert reasons.DECISION_REASONS <= described
    assert all(reasons.describe(c) for c in described)
    assert reasons.describe("NOT_A_CODE") == ""


def _reason_sinks(tree: ast.AST):
    """Expressions that become a reason: ``<...reasons...>.append(x)``, ``.extend([x, ...])``,
    ``.insert(i, x)``, ``<...reasons...> = [x, ...]`` / ``+ [x]`` and ``Decision(ok, [x, ...])``."""
    def is_reasons(node) -> bool:
        return "reasons" in ast.unparse(node)

    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and is_reasons(n.func.value):
            if n.func.attr in ("append", "extend", "insert"):
                yield from n.args
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "Decision":
            yield from n.args[1:2]
            yield from (k.value for k in n.keywords if k.arg == "reasons")
        elif isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            if n.value is not None and any(is_reasons(t) for t in targets):
                yield n.value


def _codes_in(expr, vocab_names: set[str]) -> set[str]:
    """Reason constants named in ``expr`` (``NO_FACE``, ``engine.NO_FACE``, ``reasons.REPLAY``)."""
    out = set()
    for n in ast.walk(expr):
        if isinstance(n, ast.Name) and n.id in vocab_names:
            out.add(n.id)
        elif isinstance(n, ast.Attribute) and n.attr in vocab_names:
            out.add(n.attr)
    return out


def test_reason_sink_scanner_sees_appends_and_decisions():
    src = ("reasons.append(engine.NO_FACE)\nout.reasons.extend([REPLAY, x])\n"
           "d = Decision(False, [APPROVED])\nr['reasons'] = r['reasons'] + [NOT_NEUTRAL]\n")
    found = set()
    for e in _reason_sinks(ast.parse(src)):
        found |= _codes_in(e, set(VOCAB))
    assert found == {"NO_FACE", "REPLAY", "APPROVED", "NOT_NEUTRAL"}


def test_every_code_that_becomes_a_reason_has_a_description():
    """Statically: each code a module appends to reasons (or hands to Decision) is described."""
    names = set(VOCAB)
    undescribed = []
    for p, text in _sources():
        tree = ast.parse(text)
        for expr in _reason_sinks(tree):
            for code in _codes_in(expr, names):
                if code not in reasons.DESCRIPTIONS:
                    undescribed.append(f"{_rel(p)}:{expr.lineno} {code}")
    assert not undescribed, f"a reason without a description in reasons.DESCRIPTIONS: {undescribed}"


def _frame(score, au6, au12, seed, **kw):
    from smile2pay.decision.engine import FrameObs

    rng = np.random.default_rng(seed)
    base = np.linspace(60, 190, 112)[None, :, None] + np.linspace(-30, 30, 112)[:, None, None]
    crop = np.clip(base + rng.normal(0, 6, (112, 112, 3)), 0, 255).astype(np.uint8)
    lm = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float)
    return FrameObs(identity_score=score, au_probs={"AU6": au6, "AU12": au12}, crop=crop, landmarks=lm, **kw)


def test_every_reason_the_engine_gives_is_a_described_decision_reason():
    """At run time: the engine on declining bursts of every kind."""
    from dataclasses import replace

    from smile2pay.decision.engine import FrameObs, decide
    from smile2pay.decision.policy import Policy
    from smile2pay.decision.rules import parse_rule

    pol = Policy(identity_threshold=0.4, identity_far=1e-4, identity_source="test",
                 au_thresholds={"AU6": 0.5, "AU12": 0.5}, baseline_min_delta=0.25,
                 absent_thresholds={"AU6": 0.5, "AU12": 0.5})
    rule = parse_rule("AU6+AU12")
    still = _frame(0.8, 0.9, 0.9, 1)
    bursts = {
        "identity": [_frame(0.1, 0.1, 0.1, 1), _frame(0.1, 0.9, 0.9, 2)],
        "no smile": [_frame(0.8, 0.1, 0.1, 1), _frame(0.8, 0.1, 0.1, 2)],
        "no onset": [_frame(0.8, 0.9, 0.9, 1), _frame(0.8, 0.9, 0.9, 2)],
        "replay": [still, still],
        "no face": [FrameObs(error=reasons.NO_FACE), _frame(0.8, 0.9, 0.9, 2)],
        "quality": [_frame(0.8, 0.1, 0.1, 1, quality_reasons=[reasons.BLURRY]), _frame(0.8, 0.9, 0.9, 2)],
        "nan": [_frame(float("nan"), 0.1, 0.1, 1), _frame(0.8, 0.9, 0.9, 2)],
        "empty": [],
        "one frame": [_frame(0.8, 0.9, 0.9, 1)],
    }
    seen = set()
    for name, frames in bursts.items():
        out = decide(frames, rule, pol)
        assert not out.approved, name
        seen |= set(out.reasons)
    out = decide([_frame(0.8, 0.1, 0.1, 1), _frame(0.8, 0.9, 0.9, 2)], rule, replace(pol, pad_mode="enforce"))
    seen |= set(out.reasons)
    out = decide([_frame(0.8, 0.55, 0.55, 1), _frame(0.8, 0.6, 0.6, 2)], rule, pol,
                 baseline={"AU6": 0.5, "AU12": 0.5})
    seen |= set(out.reasons)
    assert seen <= reasons.DECISION_REASONS, f"not a described decision reason: {seen - reasons.DECISION_REASONS}"
    # the run covered the engine's own codes, so the check above means something
    assert {reasons.IDENTITY_MISMATCH, reasons.AU_PATTERN_ABSENT, reasons.LIVENESS_FAILED, reasons.REPLAY,
            reasons.NO_FACE, reasons.LOW_QUALITY, reasons.INVALID_OBSERVATION,
            reasons.PRESENTATION_ATTACK} <= seen


# ---------------------------------------------------------------------------------------- detectors
def test_detector_registry():
    from smile2pay.config import Settings
    from smile2pay.errors import ConfigError
    from smile2pay.models.manifest import MODELS, PACKS
    from smile2pay.vision.detect import Detector, get_detector

    assert DEFAULT_DETECTOR in DETECTORS and Settings().detector == DEFAULT_DETECTOR
    for name, e in DETECTORS.items():
        assert e.name == name and issubclass(e.cls, Detector) and e.summary
        for pack in PACKS.values():
            spec = MODELS[e.model_name(pack)]
            assert spec.task == "detection", (name, pack.name)
    with pytest.raises(ConfigError) as err:
        Settings(detector="mtcnn").validate()
    assert all(n in err.value.message for n in DETECTORS)
    assert get_detector(DEFAULT_DETECTOR) is DETECTORS[DEFAULT_DETECTOR]


def test_detector_choices_come_from_the_registry():
    import argparse

    from smile2pay.cli import DETECTOR_HELP, add_runtime_args

    p = argparse.ArgumentParser()
    add_runtime_args(p)
    for name in DETECTORS:
        assert p.parse_args(["--detector", name]).detector == name
        assert name in DETECTOR_HELP
    with pytest.raises(SystemExit):
        p.parse_args(["--detector", "mtcnn"])


def test_no_module_retypes_a_detector_name():
    names = set(DETECTORS)

    def finder(text: str, rel: str, p: Path):
        return [] if rel in DETECTOR_NAME_HOMES else literal_hits(text, names)

    bad, pending = _scan(PENDING_DETECTOR_NAMES, finder)
    assert not bad, ("read detector names from smile2pay.vision.detect.DETECTORS: "
                     + "; ".join(f"{f}: {hits}" for f, hits in bad.items()))
    _check_pending_not_stale(PENDING_DETECTOR_NAMES, pending)


# ------------------------------------------------------------------------------------------ privates
def test_no_module_uses_another_modules_private_members():
    def finder(text: str, rel: str, p: Path):
        return private_imports(text, _module_name(p))

    bad, pending = _scan(PENDING_PRIVATE, finder)
    assert not bad, ("a private member of another module; make it public there: "
                     + "; ".join(f"{f}: {hits}" for f, hits in bad.items()))
    _check_pending_not_stale(PENDING_PRIVATE, pending)
