"""``smile2pay bench <pairs|side-sedi|latency|gallery|smile-to-pay>`` and ``smile2pay calibrate``.

Each bench lives in :mod:`smile2pay_tools.bench` as ``configure(parser)`` + ``run(args) -> dict`` (the
scripts in ``benchmarks/`` call the same functions). Results: JSON on stdout with ``--json``
(progress bars and logs on stderr), files (JSON, PNG plots, HTML/Markdown report) under ``--out``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from typing import Any

from .main import (DETECTOR_HELP, MODELS_HELP, THREADS_HELP, HelpFormatter, command, extra_missing, first_sentence,
                  plain, reflow, require)
from ..errors import Smile2PayError
from ..vision.detect import DETECTORS

#: bench name -> module (imported when the parser is built; a missing module fails at call time)
BENCHES = {
    "pairs": "smile2pay_tools.bench.pairs",
    "side-sedi": "smile2pay_tools.bench.side_sedi",
    "latency": "smile2pay_tools.bench.latency",
    "gallery": "smile2pay_tools.bench.gallery",
    "smile-to-pay": "smile2pay_tools.bench.smile_to_pay",
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


#: benches that load no model (synthetic or cached embeddings): no --models
NO_MODELS = frozenset({"gallery"})

#: help for options the bench modules declare without one (by option string); shared by calibrate(-au)
OPTION_HELP: dict[str, str] = {
    "--threads": THREADS_HELP,
    "--detector": DETECTOR_HELP,
    "--no-plots": "write no PNG plots (no matplotlib needed)",
    "--no-progress": "no progress bar on stderr",
    "--no-cache": "embed every image again instead of reading the cache",
    "--seed": "random seed",
    "--embedding": "which embeddings to score: identity, au or both",
    "--runs": "timed runs per stage",
    "--warmup": "untimed runs before timing",
    "--out": "output folder",
    "--plots-dir": "folder for the PNG plots (default: --out)",
    "--name": "file name stem of the outputs",
    "--hnsw-m": "HNSW graph degree (M)",
    "--kmeans-iter": "IVF k-means iterations",
    "--far": "false accept rate of the identity operating point",
    "--gt-cache": "AU ground-truth cache written by train-au (cache/gt.npz)",
    "--folds": "cross-validation folds",
}


def bench_summary(doc: str | None) -> tuple[str, str]:
    """(one-line summary, description) of a bench module's docstring, as plain text: the ``smile2pay bench
    NAME``: prefix dropped, RST markup removed, the summary the whole first sentence (never cut inside it)."""
    text = plain((doc or "").strip())
    para = " ".join(text.split("\n\n", 1)[0].split())
    para = re.sub(r"^smile2pay [a-z-]+(?: [a-z-]+)?:\s*", "", para)
    para = para[:1].upper() + para[1:]
    summary = first_sentence(para).rstrip(".")
    return summary, reflow(para)


def fill_help(p: argparse.ArgumentParser) -> None:
    """Give every option the bench modules left without help text a generic one (see OPTION_HELP)."""
    for a in p._actions:
        if not a.help and a.option_strings:
            a.help = next((OPTION_HELP[o] for o in a.option_strings if o in OPTION_HELP), None)


def _common_sub(p: argparse.ArgumentParser, models: bool = True) -> None:
    # SUPPRESS: given before the bench name (parent parser) or after it (here), either works
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON on stdout")
    if models:
        p.add_argument("--models", metavar="DIR", default=argparse.SUPPRESS, help=MODELS_HELP)
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging on stderr")


def _cfg_bench(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCH", title="benchmarks")
    for name in BENCHES:
        m = _module(name)
        if isinstance(m, str):
            doc, desc = f"(unavailable: {m})", f"(unavailable: {m})"
        else:
            doc, desc = bench_summary(m.__doc__)
        sp = sub.add_parser(name, help=doc, description=desc, conflict_handler="resolve",
                            formatter_class=HelpFormatter)
        if not isinstance(m, str):
            try:
                m.configure(sp)
            except Exception as e:  # a broken bench must not break every other command
                _BROKEN[name] = f"{BENCHES[name]}.configure failed: {type(e).__name__}: {e}"
                sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        else:
            sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        fill_help(sp)
        _common_sub(sp, models=name not in NO_MODELS)


def _summary(name: str, res: dict) -> str:
    m = _module(name)
    if not isinstance(m, str) and hasattr(m, "summary"):
        return m.summary(res)
    return ""


@command("bench", _cfg_bench, examples="""\
examples:
  smile2pay bench pairs --pairs pairs.csv --out bench_out/pairs     # ROC, TAR at FAR, report
  smile2pay bench latency --runs 50
  smile2pay bench pairs --help                                      # one bench's options""")
def cmd_bench(args) -> tuple[Any, int]:
    """Benchmarks: pairs, side-sedi, latency, gallery, ...

    Each writes JSON (and plots, reports) under --out; `smile2pay bench BENCH --help` for its options."""
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


def calibrate_args(p: argparse.ArgumentParser) -> None:
    """Options of ``smile2pay calibrate`` (here so that the parser builds without smile2pay-tools installed)."""
    p.add_argument("--dataset", action="append", default=[], metavar="SPEC",
                   help="population: lfw | ckplus | ckplus48 | ckplus_neutral_peak48 | CSV path,subject (repeatable)")
    p.add_argument("--pairs", action="append", default=[], metavar="FILE",
                   help="pairs population: LFW pairs.txt or CSV path_a,path_b,same[,subject_a,subject_b] (repeatable)")
    p.add_argument("--root", help="image folder for --pairs")
    p.add_argument("--far", type=float, action="append", help="target FAR (repeatable; default 1e-3 1e-4)")
    p.add_argument("--out", required=True, help="calibration JSON to write (the file verify() reads)")
    p.add_argument("--calibration", help="calibration file whose other sections (smile gate, continuity, PAD) are "
                                         "kept (default: --out if it exists, else the shipped one)")
    p.add_argument("--bootstrap", type=int, default=100, help="subject-bootstrap rounds (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--au-data", metavar="SPEC", help="AU-labelled images (ckplus, ckplus48, or CSV path,subject,au_codes)")
    p.add_argument("--au-oof", metavar="DIR", help="train-au output folder with cv/fold*/oof.npz and cache/gt.npz")
    p.add_argument("--aus", nargs="+", default=["AU6", "AU12"], help="AUs to calibrate (default AU6 AU12)")
    p.add_argument("--au-fpr", type=float, default=0.05, help="AU-absent images allowed above threshold (0.05)")
    p.add_argument("--au-miss", type=float, default=0.05, help="AU-present images allowed below absent_threshold")
    p.add_argument("--detector", choices=list(DETECTORS))
    p.add_argument("--threads", type=int)
    p.add_argument("--cache", help="cache folder (default SMILE2PAY_CACHE or ./results/cache)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _cfg_calibrate(p: argparse.ArgumentParser) -> None:
    calibrate_args(p)
    fill_help(p)


@command("calibrate", _cfg_calibrate, examples="""\
examples:
  smile2pay calibrate --dataset my_people.csv --out my_policy.json     # CSV path,subject
  smile2pay verify --gallery shop --policy my_policy.json alice f0.jpg f1.jpg""")
def cmd_calibrate(args) -> tuple[Any, int]:
    """Identity thresholds from your own photos.

    Measures the identity threshold at each target FAR and writes a calibration file (--policy)."""
    from smile2pay_tools.bench import calibrate

    res = calibrate.run(args)
    if not args.json:
        return calibrate.summary(res), 0
    return res, 0


def _cfg_calibrate_continuity(p: argparse.ArgumentParser) -> None:
    from . import calibrate_continuity

    calibrate_continuity.configure(p)
    fill_help(p)


@command("calibrate-continuity", _cfg_calibrate_continuity, examples="""\
examples:
  smile2pay calibrate-continuity --sessions captures.csv --out my_policy.json    # CSV path,session
  smile2pay calibrate-continuity --sessions captures.csv --attacks photos.csv --out my_policy.json --json""")
def cmd_calibrate_continuity(args) -> tuple[Any, int]:
    """Capture-continuity limits from your own same-session captures.

    Fits the one-capture-not-two-photos check on bona fide bursts or stream frames from your camera and writes
    the capture_continuity sections of a calibration file (--policy)."""
    from . import calibrate_continuity

    res = calibrate_continuity.run(args)
    if not args.json:
        return calibrate_continuity.summary(res), 0
    return res, 0


def _cfg_calibrate_pad(p: argparse.ArgumentParser) -> None:
    from . import calibrate_pad

    calibrate_pad.configure(p)
    fill_help(p)


@command("calibrate-pad", _cfg_calibrate_pad, examples="""\
examples:
  smile2pay calibrate-pad --bona-fide till_frames/ --out my_policy.json                 # a folder of images
  smile2pay calibrate-pad --bona-fide frames.csv --attacks attacks/ --mode enforce --out my_policy.json --json
                                          # CSV path[,group]; attacks/<species>/*.jpg reported per species""")
def cmd_calibrate_pad(args) -> tuple[Any, int]:
    """Passive-PAD threshold from your own camera frames.

    Sets the presentation-attack threshold at a chosen BPCER on bona fide frames from your camera, reports
    APCER on attack frames you captured, and writes the pad section of a calibration file (--policy)."""
    from . import calibrate_pad

    res = calibrate_pad.run(args)
    if not args.json:
        return calibrate_pad.summary(res), 0
    return res, 0


def _cfg_calibrate_au(p: argparse.ArgumentParser) -> None:
    from . import calibrate_au

    calibrate_au.configure(p)
    fill_help(p)


@command("calibrate-au", _cfg_calibrate_au, examples="""\
examples:
  smile2pay calibrate-au --frames frames.csv --out my_policy.json      # CSV path,subject,label[,burst]""")
def cmd_calibrate_au(args) -> tuple[Any, int]:
    """Smile thresholds from your own labelled frames.

    Measures the smile gate and writes the au sections of a calibration file (--policy)."""
    from . import calibrate_au

    res = calibrate_au.run(args)
    if not args.json:
        return calibrate_au.summary(res), 0
    return res, 0
