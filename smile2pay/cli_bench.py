"""``smile2pay bench <pairs|side-sedi|latency|gallery|smile-to-pay>`` and ``smile2pay calibrate``.

Each bench lives in :mod:`smile2pay.bench` as ``configure(parser)`` + ``run(args) -> dict`` (the
scripts in ``benchmarks/`` call the same functions). Results: JSON on stdout with ``--json``
(progress bars and logs on stderr), files (JSON, PNG plots, HTML/Markdown report) under ``--out``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Any

from .cli import command, extra_missing, require
from .errors import Smile2PayError

#: bench name -> module (imported when the parser is built; a missing module fails at call time)
BENCHES = {
    "pairs": "smile2pay.bench.pairs",
    "side-sedi": "smile2pay.bench.side_sedi",
    "latency": "smile2pay.bench.latency",
    "gallery": "smile2pay.bench.gallery",
    "smile-to-pay": "smile2pay.bench.smile_to_pay",
}


#: bench name -> optional packages it cannot run without (the extra is named by cli.OPTIONAL_PACKAGES);
#: a bench that writes plots also needs matplotlib (viz) unless --no-plots
BENCH_NEEDS: dict[str, tuple[str, ...]] = {
    "smile-to-pay": ("torch",),
}

_BROKEN: dict[str, str] = {}
#: bench name -> the optional package its module failed to import (-> EXTRA_MISSING, not BENCH_UNAVAILABLE)
_MISSING: dict[str, str] = {}


def _module(name: str):
    """The bench's module, or the reason it cannot be used (str)."""
    if name in _BROKEN:
        return _BROKEN[name]
    mod = BENCHES[name]
    try:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed in this version"
        m = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name and extra_missing(e.name) is not None:
            _MISSING[name] = e.name
        return f"{mod} cannot be imported: {type(e).__name__}: {e}"
    except Exception as e:  # an optional dependency (faiss, torch) missing or a broken module
        return f"{mod} cannot be imported: {type(e).__name__}: {e}"
    if not hasattr(m, "configure") or not hasattr(m, "run"):
        return f"{mod} has no configure()/run()"
    return m


def _common_sub(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: given before the bench name (parent parser) or after it (here), either works
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON on stdout")
    p.add_argument("--models", default=argparse.SUPPRESS, help="model folder or pack name")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging on stderr")


def _cfg_bench(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name in BENCHES:
        m = _module(name)
        doc = (m.__doc__ or "").strip().splitlines()[0] if not isinstance(m, str) else f"(unavailable: {m})"
        sp = sub.add_parser(name, help=doc, description=doc, conflict_handler="resolve")
        if not isinstance(m, str):
            try:
                m.configure(sp)
            except Exception as e:  # a broken bench must not break every other command
                _BROKEN[name] = f"{BENCHES[name]}.configure failed: {type(e).__name__}: {e}"
                sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        else:
            sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        _common_sub(sp)


def _summary(name: str, res: dict) -> str:
    m = _module(name)
    if not isinstance(m, str) and hasattr(m, "summary"):
        return m.summary(res)
    return ""


@command("bench", _cfg_bench)
def cmd_bench(args) -> tuple[Any, int]:
    m = _module(args.bench)
    if args.bench in _MISSING:
        raise extra_missing(_MISSING[args.bench], f"bench {args.bench}")
    needs = BENCH_NEEDS.get(args.bench, ())
    if getattr(args, "no_plots", None) is False:
        needs += ("matplotlib",)
    require(needs, f"bench {args.bench}")   # before a long run, not after it
    if isinstance(m, str):
        raise Smile2PayError(f"bench {args.bench} is not available: {m}", code="BENCH_UNAVAILABLE",
                             bench=args.bench)
    res = m.run(args)
    if not args.json:
        text = _summary(args.bench, res)
        if text:
            return text, 0
    return res, 0


def _cfg_calibrate(p: argparse.ArgumentParser) -> None:
    from .bench import calibrate

    calibrate.configure(p)


@command("calibrate", _cfg_calibrate)
def cmd_calibrate(args) -> tuple[Any, int]:
    from .bench import calibrate

    res = calibrate.run(args)
    if not args.json:
        return calibrate.summary(res), 0
    return res, 0


def _cfg_calibrate_au(p: argparse.ArgumentParser) -> None:
    from .bench import calibrate_au

    calibrate_au.configure(p)


@command("calibrate-au", _cfg_calibrate_au)
def cmd_calibrate_au(args) -> tuple[Any, int]:
    from .bench import calibrate_au

    res = calibrate_au.run(args)
    if not args.json:
        return calibrate_au.summary(res), 0
    return res, 0
