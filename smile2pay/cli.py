"""Command line: ``smile2pay <command> ... [--json]``.

Results go to stdout (pure JSON with ``--json``), logs to stderr. Exit codes:
0 success, 1 a negative result (e.g. a check failed, no face), 2 bad input or setup
(with a JSON error object on stdout when ``--json`` is given), including a missing optional
extra (``EXTRA_MISSING``, naming the extra to install).

Third-party libraries print to stdout (insightface notices, onnxruntime warnings); while a
command runs, file descriptor 1 is pointed at stderr so that only our result reaches stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import Any, Callable

from . import __version__
from .errors import Smile2PayError

log = logging.getLogger("smile2pay.cli")

#: registry of sub-command handlers: name -> (configure(parser), run(args) -> (payload, exit_code))
COMMANDS: dict[str, tuple[Callable, Callable]] = {}


def command(name: str, configure: Callable[[argparse.ArgumentParser], None]):
    def wrap(fn):
        COMMANDS[name] = (configure, fn)
        return fn

    return wrap


@contextlib.contextmanager
def stdout_to_stderr():
    """Route fd 1 (Python and C level) to stderr; yield a writer to the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    old_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield real
    finally:
        sys.stdout.flush()
        sys.stdout = old_stdout
        os.dup2(saved, 1)
        os.close(saved)
        real.flush()
        real.close()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--models", help="model folder or pack name (default: SMILE2PAY_MODELS, then "
                                    "~/.smile2pay/models)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")


def settings_from(args, **extra):
    from .config import Settings

    kw = {"models": getattr(args, "models", None)}
    for k in ("detector", "threads"):
        if getattr(args, k, None) is not None:
            kw[k] = getattr(args, k)
    kw.update(extra)
    return Settings.from_env(**kw)


# ---------------------------------------------------------------------------------- optional extras
#: optional packages (top-level import name) -> the extra in setup.cfg that installs them
OPTIONAL_PACKAGES: dict[str, str] = {
    "fastapi": "server", "starlette": "server", "uvicorn": "server", "multipart": "server",
    "python_multipart": "server", "websockets": "server",
    "torch": "train", "onnxscript": "train",
    "matplotlib": "viz",
    "psycopg": "postgres",
    "httpx": "dev", "selenium": "dev",
}
#: commands that cannot run at all without an extra: checked before the command starts (no model is
#: loaded, no data read first). Anything else that imports an optional package is caught in main().
COMMAND_NEEDS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),      # server
    "train-au": ("torch",),               # train
    "replay": ("matplotlib",),            # viz
}


class ExtraMissingError(Smile2PayError):
    """A command needs an optional extra that is not installed (exit 2, code EXTRA_MISSING)."""

    code = "EXTRA_MISSING"


def install_hints(extra: str) -> list[str]:
    """How to add an extra. smile2pay is not on a public index: install from the source folder or a wheel."""
    return [f"pip install '.[{extra}]'",
            f"pip install 'path/to/smile2pay-{__version__}-py3-none-any.whl[{extra}]'"]


def extra_missing(module: str, command: str | None = None) -> ExtraMissingError | None:
    """The typed error for an optional package that cannot be imported; None if ``module`` is not one."""
    top = (module or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(top)
    if extra is None:
        return None
    what = f"smile2pay {command}" if command else "this command"
    hints = install_hints(extra)
    return ExtraMissingError(f"{what} needs the optional extra '{extra}' ({top} is not installed): "
                             f"run {hints[0]} in the smile2pay source folder, or {hints[1]} with a built wheel",
                             extra=extra, module=top, command=command, install=hints)


def require(modules, command: str | None = None) -> None:
    """Raise :class:`ExtraMissingError` unless every module can be found (found, not imported)."""
    import importlib.util

    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise extra_missing(m, command) or ExtraMissingError(
                f"{command or 'this command'} needs {m}, which is not installed", module=m, command=command)


def _needs(args) -> tuple[str, ...]:
    needs = COMMAND_NEEDS.get(args.command, ())
    if args.command == "train-au" and (getattr(args, "ensemble_of", None) or getattr(args, "report_only", False)):
        needs = ()   # combining ONNX files / rebuilding a report needs no torch
    if str(getattr(args, "gallery", None) or "").startswith(("postgresql://", "postgres://")):
        needs += ("psycopg",)   # a fleet gallery: the postgres extra
    return needs


def _as_extra_missing(e: BaseException, command: str | None) -> Smile2PayError | None:
    """A raw ModuleNotFoundError (or a typed error wrapping one) of an optional package -> EXTRA_MISSING."""
    cause = e if isinstance(e, ModuleNotFoundError) else e.__cause__
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        return extra_missing(cause.name, command)
    return None


# ---------------------------------------------------------------------------------- models
def _cfg_models(p):
    p.add_argument("action", choices=["check", "list", "download"])
    p.add_argument("--pack", default=None, help="pack to check/download (default: mobile)")
    p.add_argument("--dest", help="download: target folder (default: the first model folder)")
    p.add_argument("--url", help="download: override the archive URL (e.g. a mirror or file://)")
    p.add_argument("--sha256", action="append", default=[], metavar="FILE=DIGEST",
                   help="download: expected digest of a file not pinned in the manifest")


@command("models", _cfg_models)
def cmd_models(args) -> tuple[Any, int]:
    from .models import PACKS, MODELS, ModelStore, get_pack
    from .models.store import download as do_download

    settings = settings_from(args)
    pack = args.pack or settings.pack_name()
    if args.action == "list":
        return {"packs": {k: {"models": v.model_names(), "description": v.description} for k, v in PACKS.items()},
                "models": {k: v.to_dict() for k, v in MODELS.items()}}, 0
    if args.action == "check":
        store = ModelStore(settings.model_dir_candidates())
        results = [r.to_dict() for r in store.check_pack(pack)]
        ok = all(r["ok"] for r in results)
        return {"pack": pack, "folders": [str(f) for f in store.folders], "ok": ok, "models": results}, 0 if ok else 1
    dest = args.dest or str(settings.model_dir_candidates()[0])
    names = get_pack(pack).model_names()
    digests = {}
    for item in args.sha256:
        if "=" not in item:
            raise Smile2PayError(f"--sha256 wants FILE=DIGEST, got {item!r}", code="REQUEST_INVALID")
        k, v = item.split("=", 1)
        digests[k] = v
    paths = do_download(names, dest, digests=digests, url=args.url, progress=not args.json)
    return {"pack": pack, "dest": dest, "files": [str(p) for p in paths]}, 0


# ---------------------------------------------------------------------------------- analyze
def _cfg_analyze(p):
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--detector", choices=["scrfd", "yunet"])
    p.add_argument("--no-embed", action="store_true", help="skip the identity embedding")
    p.add_argument("--threads", type=int)


@command("analyze", _cfg_analyze)
def cmd_analyze(args) -> tuple[Any, int]:
    from .pipeline import FacePipeline

    pipe = FacePipeline(settings_from(args))
    results = []
    errors = 0
    for path in args.images:
        try:
            faces = pipe.analyze(path, embed=not args.no_embed)
            results.append({"image": path, "faces": [f.to_dict() for f in faces], "count": len(faces)})
        except Smile2PayError as e:
            errors += 1
            results.append({"image": path, **e.to_dict()})
    code = 2 if errors else 0
    return {"images": results, "providers": {k: v.to_dict() for k, v in pipe.providers.items()}}, code


# ---------------------------------------------------------------------------------- demo
def _cfg_demo(p):
    p.add_argument("--data", help="data folder holding samples/ (default: SMILE2PAY_DATA, ../shared/data)")
    p.add_argument("--gallery", help="keep the demo gallery in this folder (default: a temporary one)")


@command("demo", _cfg_demo)
def cmd_demo(args) -> tuple[Any, int]:
    from .demo import run_demo

    res = run_demo(args.data, models=args.models, gallery=args.gallery, progress=not args.json)
    cases = res["smile_to_pay"].get("cases", [])
    ok = (res["genuine"]["accepted"] > 0 and res["impostor"]["accepted"] == 0
          and all(c["approved"] == c["expected"] for c in cases))
    if not args.json:
        lines = [f"identity: {res['summary']}"]
        for c in res["smile_to_pay"].get("cases", []):
            lines.append(f"verify {c['claim']:5s} {c['probe']:32s} -> {'APPROVED' if c['approved'] else 'declined'}"
                         f" {','.join(c['reasons'])}")
        lines.append(f"smile to pay: {res['smile_to_pay'].get('summary', res['smile_to_pay'].get('skipped'))}")
        return "\n".join(lines), 0 if ok else 1
    return res, 0 if ok else 1


# ---------------------------------------------------------------------------------- main
#: modules that register further commands with @command (imported by build_parser)
COMMAND_MODULES = ("smile2pay.cli_gallery", "smile2pay.cli_au", "smile2pay.cli_verify", "smile2pay.cli_bench",
                   "smile2pay.cli_stream")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(prog="smile2pay", description="smile-to-pay face verification SDK")
    parser.add_argument("--version", action="version", version=f"smile2pay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, _) in sorted(COMMANDS.items()):
        p = sub.add_parser(name)
        configure(p)
        _common(p)
    return parser


def _print_human(payload: Any, out) -> None:
    if isinstance(payload, (dict, list)):
        out.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        out.write(f"{payload}\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help/--version exit 0
        if want_json and e.code not in (0, None):
            sys.stdout.write(json.dumps({"error": {"type": "UsageError", "code": "USAGE",
                                                   "message": "invalid command line; see --help"}}) + "\n")
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _, run = COMMANDS[args.command]
    with stdout_to_stderr() as out:
        args._out = out   # commands that stream lines (watch) write them here; the result comes last
        try:
            require(_needs(args), args.command)
            payload, code = run(args)
        except Smile2PayError as e:
            if e.code == "DEPENDENCY_MISSING":
                e = _as_extra_missing(e, args.command) or e
            payload, code = e.to_dict(), e.exit_code
            log.error("%s", e)
        except ModuleNotFoundError as e:   # an optional package imported deep inside a command
            err = _as_extra_missing(e, args.command)
            if err is None:
                raise
            payload, code = err.to_dict(), err.exit_code
            log.error("%s", err)
        except KeyboardInterrupt:
            payload, code = {"error": {"type": "Interrupted", "code": "INTERRUPTED", "message": "interrupted"}}, 130
        if args.json:
            out.write(json.dumps(payload, default=str) + "\n")
        else:
            _print_human(payload, out)
    return code


if __name__ == "__main__":  # pragma: no cover
    # ``python -m smile2pay.cli`` runs this file as __main__; the command modules register into the
    # importable ``smile2pay.cli``, so dispatch through that one module object.
    from smile2pay.cli import main as _main

    sys.exit(_main())
