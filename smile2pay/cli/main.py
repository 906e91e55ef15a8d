"""Command line: ``smile2pay <command> ... [--json]``.

Results go to stdout: readable lines by default, pure JSON with ``--json``; logs and progress bars go
to stderr. Exit codes: 0 success, 1 a negative result (e.g. a check failed, no face), 2 bad input or
setup (with a JSON error object on stdout when ``--json`` is given, a readable error with the next step
to take on stderr otherwise), including a missing optional extra (``EXTRA_MISSING``, naming the extra
to install) and a command line argparse refuses (``USAGE``, with argparse's own message).

Each command is a function registered with :func:`command`: its docstring's first line is the
one-line summary ``smile2pay --help`` lists (the rest of the docstring is the description of
``smile2pay <command> --help``), ``examples`` its epilog, ``human`` how its result reads without
``--json``.

Third-party libraries print to stdout (insightface notices, onnxruntime warnings); while a
command runs, file descriptor 1 is pointed at stderr so that only our result reaches stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import re
import sys
import textwrap
from typing import Any, Callable

from .. import __version__
from ..errors import Smile2PayError
from ..reasons import LOW_QUALITY, MULTIPLE_FACES, NO_FACE, NOT_NEUTRAL
from ..vision.detect import DEFAULT_DETECTOR, DETECTORS

log = logging.getLogger("smile2pay.cli")

#: registry of sub-command handlers: name -> (configure(parser), run(args) -> (payload, exit_code))
COMMANDS: dict[str, tuple[Callable, Callable]] = {}
#: name -> {"help": one line, "description": text, "examples": text, "models": bool, "human": render}
COMMAND_INFO: dict[str, dict[str, Any]] = {}

#: the order ``smile2pay --help`` lists the commands in: a newcomer's path first, then operations,
#: then measurement and training (any command not named here comes last, alphabetically)
COMMAND_ORDER = ("demo", "analyze", "compare", "enroll", "verify", "identify", "verify-identity", "serve", "watch",
                 "gallery", "remove", "enroll-batch", "gallery-rotate-key", "models", "bench", "calibrate",
                 "calibrate-au", "calibrate-continuity", "calibrate-pad", "train-au", "replay")


def command(name: str, configure: Callable[[argparse.ArgumentParser], None], *, help: str | None = None,
            examples: str | None = None, models: bool = True, human: Callable[[Any, int], str] | None = None):
    """Register ``fn(args) -> (payload, exit_code)`` as ``smile2pay NAME``.

    ``help``: the one-line summary (default: the first line of ``fn``'s docstring; the rest of the
    docstring becomes the command's description). ``examples``: command lines shown under
    ``smile2pay NAME --help``. ``models``: whether the command loads models (only then is ``--models``
    offered). ``human``: renders the payload for people (default: indented ``key: value`` lines)."""
    def wrap(fn):
        COMMANDS[name] = (configure, fn)
        summary, description = split_doc(fn.__doc__)
        COMMAND_INFO[name] = {"help": help or summary, "description": description, "examples": examples,
                              "models": models, "human": human}
        return fn

    return wrap


def split_doc(doc: str | None) -> tuple[str, str]:
    """(summary, description) of a docstring: the first paragraph as one line, and the whole text
    dedented (reStructuredText markup removed, see :func:`plain`)."""
    text = inspect.cleandoc(doc or "")
    if not text:
        return "", ""
    first = " ".join(text.split("\n\n", 1)[0].split())
    return plain(first), reflow(plain(text))


def reflow(text: str, width: int | None = None) -> str:
    """Re-wrap each paragraph (an indented paragraph, e.g. an example, is kept as it is)."""
    width = width or help_width() - 2
    paras = text.split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else textwrap.fill(" ".join(p.split()), width) for p in paras)


def plain(text: str) -> str:
    """reStructuredText -> plain text for the terminal: ``code`` -> code, :func:`x.y` -> x.y."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def first_sentence(text: str) -> str:
    """The first sentence of a (plain) paragraph, whole: cut at '. ' only, never inside a line."""
    m = re.search(r"(?<=[a-z0-9)\]])\.(\s|$)", text)
    return text[:m.start() + 1] if m else text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and example epilogs keep their line breaks; every option's help ends with its default
    (unless the help already says what it is, or there is none: a flag, an unset option)."""

    def __init__(self, prog, **kw):
        kw.setdefault("max_help_position", 28)
        kw.setdefault("width", help_width())
        super().__init__(prog, **kw)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.help is not argparse.SUPPRESS:
            # argparse measures the sub-command names without their extra indentation: a long name
            # (gallery-rotate-key) would be put on a line of its own
            names = [len(self._format_action_invocation(a)) for a in action._get_subactions()]
            if names:
                self._action_max_length = max(self._action_max_length, max(names) + self._current_indent + 2)

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if (h == argparse.SUPPRESS or "%(default)" in h or "default" in h.lower() or d is None or d is False
                or d is argparse.SUPPRESS or d == [] or isinstance(action, argparse._CountAction)
                or (not action.option_strings and action.nargs not in ("?", "*"))):
            return h
        return f"{h} (default: %(default)s)" if h else "(default: %(default)s)"


def help_width() -> int:
    """The width help text is wrapped at: the terminal's (COLUMNS), between 60 and 100."""
    import shutil

    return min(100, max(60, shutil.get_terminal_size((100, 24)).columns - 2))


class UsageError(Exception):
    """argparse refused the command line (exit 2): its message and the usage of the parser concerned."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (with argparse's message) so that ``--json`` can report it."""

    def error(self, message):
        raise UsageError(self, message)


@contextlib.contextmanager
def stdout_to_stderr():
    """Route fd 1 (Python and C level) to stderr; yield a writer to the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    # backslashreplace: a file name that is not UTF-8 (a surrogate escape) is shown, not a crash
    real = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="backslashreplace")
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


MODELS_HELP = ("model folder or pack name (default: SMILE2PAY_MODELS, then ~/.smile2pay/models; "
               "`smile2pay models check` says what is missing)")
THREADS_HELP = "onnxruntime threads per model (default: SMILE2PAY_THREADS, else 1)"
DETECTOR_HELP = "face detector: " + "; ".join(
    f"{e.name}{' (default)' if e.name == DEFAULT_DETECTOR else ''}: {e.summary}" for e in DETECTORS.values())
PICK_HELP = ("which face when a photo holds several: error (refuse), largest, center (nearest the "
             "middle) or best (highest detection score)")
POLICY_HELP = ("calibration file with the thresholds (`smile2pay calibrate` writes one; default: the one "
               "shipped for the model pack, smile2pay/decision/calibration/mobile.json)")
FAR_HELP = "false accept rate: which of the calibration file's operating points to use (1e-3, 1e-4 or 1e-5)"


def add_runtime_args(p: argparse.ArgumentParser, detector: bool = True, threads: bool = True) -> None:
    """``--detector`` / ``--threads``, the same help everywhere."""
    if detector:
        p.add_argument("--detector", choices=list(DETECTORS), help=DETECTOR_HELP)
    if threads:
        p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)


def _common(p: argparse.ArgumentParser, models: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout (default: readable lines)")
    if models:
        p.add_argument("--models", metavar="DIR", help=MODELS_HELP)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")


def settings_from(args, **extra):
    from ..config import Settings

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
    "smile2pay_tools": "tools",
}
#: commands that cannot run at all without an extra: checked before the command starts (no model is
#: loaded, no data read first). Anything else that imports an optional package is caught in main().
COMMAND_NEEDS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),      # server
    "train-au": ("smile2pay_tools", "torch"),   # tools[train]
    "bench": ("smile2pay_tools",),              # tools
    "calibrate": ("smile2pay_tools",),          # tools (dataset loaders)
    "replay": ("matplotlib",),            # viz
}


class ExtraMissingError(Smile2PayError):
    """A command needs an optional extra that is not installed (exit 2, code EXTRA_MISSING)."""

    code = "EXTRA_MISSING"


#: extras that live in the separate smile2pay-tools distribution (tools/ in the source folder), not in the wheel
TOOLS_EXTRAS = {"tools": "./tools", "train": "./tools[train]"}


def install_hints(extra: str) -> list[str]:
    """How to add an extra. smile2pay is not on a public index: install from the source folder or a wheel;
    the developer tooling (benchmarks, training) installs from the source folder's ``tools/``."""
    if extra in TOOLS_EXTRAS:
        return [f"pip install -e '{TOOLS_EXTRAS[extra]}'",
                f"pip install 'path/to/smile2pay-tools-{__version__}-py3-none-any.whl"
                + ("[train]'" if extra == "train" else "'")]
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


# ---------------------------------------------------------------------------------- errors: what next
def hint_for(code: str, args=None) -> str | None:
    """The next step for an error code, in the words of the command line (None: nothing to add)."""
    from ..decision.rules import KNOWN_AUS

    cmd = getattr(args, "command", None) or "COMMAND"
    g = getattr(args, "gallery", None) or "G"
    hints = {
        "GALLERY_NOT_FOUND": (f"create it with `smile2pay serve --gallery {g} --create`" if cmd == "serve" else
                              f"create it with `smile2pay enroll --gallery {g} --create USER_ID PHOTO`, "
                              f"or check the path"),
        "GALLERY_USER_NOT_FOUND": f"`smile2pay gallery --gallery {g} list` shows who is enrolled",
        "GALLERY_USER_EXISTS": "add photos with `--mode append`, or start the user over with `--mode replace`",
        "GALLERY_DUPLICATE": "this face is enrolled already under another id (see details); "
                             "`--allow-duplicate` enrols it anyway",
        "GALLERY_KEY_REQUIRED": "give the gallery's key: `--key-file FILE` or SMILE2PAY_GALLERY_KEY_FILE",
        "GALLERY_WRONG_KEY": "this is not the key the gallery was created with: `--key-file FILE` or "
                             "SMILE2PAY_GALLERY_KEY_FILE",
        "GALLERY_MODEL_MISMATCH": "the gallery was enrolled with another identity model: use that model pack "
                                  "(--models), or enrol the users again into a new gallery",
        "MODEL_MISSING": "point --models (or SMILE2PAY_MODELS) at the folder holding the model files; "
                         "`smile2pay models check` lists what is missing",
        "MODEL_CHECKSUM_MISMATCH": "the file is not the expected one: `smile2pay models check` shows the digests; "
                                   "download it again (`smile2pay models download`)",
        "IMAGE_NOT_FOUND": "check the path (relative paths are relative to the current folder)",
        "IMAGE_UNREADABLE": "give a JPEG, PNG, BMP or WebP file",
        "IMAGE_EMPTY": "the file is empty: give a JPEG, PNG, BMP or WebP photo",
        NO_FACE: "use a photo with one clearly visible, frontal face; `smile2pay analyze PHOTO` shows what "
                   "the detector finds",
        MULTIPLE_FACES: "crop the photo, or choose a face with `--pick largest` (or center, best)",
        LOW_QUALITY: "use a sharper, evenly lit photo with a larger face; `smile2pay analyze PHOTO` shows "
                       "the quality checks",
        NOT_NEUTRAL: "enrol a neutral (not smiling) photo as --kind neutral, or this one as --kind smile",
        "RULE_INVALID": "write the rule as AUs joined by + (required) and - (forbidden), e.g. AU6+AU12 or "
                        "AU6+AU12-AU4",
        "RULE_UNKNOWN_AU": f"the AU model outputs {', '.join(KNOWN_AUS)} (see docs/au.md)",
        "FAR_INVALID": "use one of the calibration's operating points: --far 1e-3, 1e-4 or 1e-5",
        "CALIBRATION_MISSING": "give a calibration file with --policy (`smile2pay calibrate` writes one)",
        "DATA_MISSING": "set SMILE2PAY_DATA (or --data) to the folder holding samples/",
        "DATASET_NOT_FOUND": "check the path, or set SMILE2PAY_DATA to the data folder",
        "VIDEO_UNREADABLE": "check the path or the camera index (--camera 0 is the first camera)",
        "USAGE": f"`smile2pay {cmd} --help` lists the arguments and shows examples" if cmd != "COMMAND"
                 else "`smile2pay --help` lists the commands",
    }
    return hints.get(code)


def _with_hint(payload: Any, args) -> Any:
    """Add ``error.hint`` (the next step) to an error payload that has none."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict) and "hint" not in payload["error"]:
        h = hint_for(payload["error"].get("code", ""), args)
        if h:
            payload["error"]["hint"] = h
    return payload


# ---------------------------------------------------------------------------------- human output
def fmt_num(v: Any, digits: int = 4) -> str:
    """A number for people: floats rounded, small ones in exponent form (1e-4)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-")
    return f"{round(v, digits):g}"


def fmt_score(v: Any) -> str:
    """A cosine / probability for people: 4 decimals (scores and thresholds side by side)."""
    return "-" if v is None else f"{float(v):.4f}"


def as_lines(obj: Any, indent: int = 0) -> list[str]:
    """Any JSON-like value as indented ``key: value`` lines (the default human rendering)."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v and not _flat_list(v):
                out.append(f"{pad}{k}:")
                out.extend(as_lines(v, indent + 2))
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                sub = as_lines(v, indent + 2)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_scalar(v)}")
    else:
        out.append(f"{pad}{_scalar(obj)}")
    return out


def _flat_list(v) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v) and len(v) <= 12


def _scalar(v: Any) -> str:
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):   # a numpy value or array in a result
        v = v.tolist()
    if v is None or (isinstance(v, (list, dict)) and not v):
        return "-"
    if isinstance(v, list):
        return ", ".join(_scalar(x) for x in v)
    if isinstance(v, float):
        return fmt_num(v, 6)
    return str(v)


def render_error(payload: dict, args=None) -> str:
    """An error payload as people read it: code and message, then the next step."""
    e = payload.get("error") or {}
    cmd = getattr(args, "command", None)
    lines = [f"smile2pay{' ' + cmd if cmd else ''}: error [{e.get('code')}]: {e.get('message')}"]
    if e.get("hint"):
        lines.append(f"  next: {e['hint']}")
    return "\n".join(lines)


def _print_human(payload: Any, out, args=None, code: int = 0) -> None:
    info = COMMAND_INFO.get(getattr(args, "command", None) or "", {})
    if isinstance(payload, dict) and set(payload) == {"error"}:
        sys.stderr.write(render_error(payload, args) + "\n")
        return
    render = info.get("human")
    if render is not None and isinstance(payload, (dict, list)):
        text = render(payload, code)
    elif isinstance(payload, (dict, list)):
        text = "\n".join(as_lines(payload))
    else:
        text = f"{payload}"
    out.write(text.rstrip("\n") + "\n")


# ---------------------------------------------------------------------------------- models
def _cfg_models(p):
    p.add_argument("action", choices=["check", "list", "download"],
                   help="check: every model file present with the right sha256; list: packs and models; "
                        "download: fetch a pack")
    p.add_argument("--pack", default=None, help="pack to check/download (default: mobile)")
    p.add_argument("--dest", help="download: target folder (default: the first model folder)")
    p.add_argument("--url", help="download: override the archive URL (e.g. a mirror or file://)")
    p.add_argument("--sha256", action="append", default=[], metavar="FILE=DIGEST",
                   help="download: expected digest of a file not pinned in the manifest")


def _human_models(d: dict, code: int) -> str:
    if "models" in d and isinstance(d["models"], list):   # check
        lines = [f"pack {d['pack']}: {'all model files OK' if d['ok'] else 'NOT OK'} "
                 f"(searched {', '.join(d['folders'])})"]
        for m in d["models"]:
            state = "ok" if m.get("ok") else ("missing" if not m.get("present") else "sha256 mismatch")
            lines.append(f"  {m['name']:28s} {state:16s} {m.get('path') or ''}")
        if not d["ok"]:
            lines.append("next: put the files in a folder and pass --models DIR (or SMILE2PAY_MODELS), or "
                         "`smile2pay models download --pack PACK`")
        return "\n".join(lines)
    if "packs" in d:
        lines = ["packs:"]
        for k, v in d["packs"].items():
            lines.append(f"  {k:10s} {', '.join(v['models'])}" + (f"  ({v['description']})" if v.get("description")
                                                                   else ""))
        return "\n".join(lines)
    return "\n".join(as_lines(d))


@command("models", _cfg_models, human=_human_models, examples="""\
examples:
  smile2pay models check                 # every file present, sha256 as pinned
  smile2pay models check --models /srv/smile2pay/models
  smile2pay models download --pack buffalo_s --dest ~/.smile2pay/models""")
def cmd_models(args) -> tuple[Any, int]:
    """Check, list or download the model files.

    check exits 1 when a file is missing or its sha256 is not the pinned one."""
    from ..models import PACKS, MODELS, ModelStore, get_pack
    from ..models.store import download as do_download

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
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, WebP)")
    p.add_argument("--no-embed", action="store_true", help="skip the identity embedding")
    p.add_argument("--pad", action="store_true",
                   help="also score each face for presentation attacks (MiniFASNet p_real, as verify() scores it; "
                        "the threshold and minimum face size of --policy or the shipped calibration)")
    p.add_argument("--policy", help="calibration file whose pad section --pad reports against (default: shipped)")
    add_runtime_args(p)


def _human_analyze(d: dict, code: int) -> str:
    lines = []
    for img in d["images"]:
        if "error" in img:
            e = img["error"]
            lines.append(f"{img['image']}: error [{e['code']}] {e['message']}")
            h = hint_for(e["code"])
            if h:
                lines.append(f"  next: {h}")
            continue
        n = img["count"]
        lines.append(f"{img['image']}: {'NO FACE' if n == 0 else f'{n} face' + ('s' if n > 1 else '')}")
        for i, f in enumerate(img["faces"]):
            x1, y1, x2, y2 = f["bbox"]
            q = f.get("quality") or {}
            qs = "quality ok" if q.get("passed") else f"quality: {', '.join(q.get('reasons') or []) or 'failed'}"
            probs = f.get("au_probs") or {}
            au = " ".join(f"{k} {probs[k]:.2f}" for k in ("AU6", "AU12") if k in probs)
            au = f"smile {au}" if au else ""
            pad = f.get("pad")
            ps = ""
            if pad:
                ps = (f"PAD face under {pad['min_face_px']:g} px, not scored" if pad["p_real"] is None else
                      f"PAD p_real {pad['p_real']:.3f} ({'bona fide' if pad['bona_fide'] else 'attack'} at "
                      f"{pad['threshold']:g})")
            lines.append(f"  face {i + 1}: box {x1:.0f},{y1:.0f} {x2 - x1:.0f}x{y2 - y1:.0f}px, detection "
                         f"{f['det_score']:.2f}, {qs}" + (f", {au}" if au else "") + (f", {ps}" if ps else ""))
        if n == 0:
            lines.append("  (a face too small, turned away or covered is not found; try a frontal photo)")
    return "\n".join(lines)


@command("analyze", _cfg_analyze, human=_human_analyze, examples="""\
examples:
  smile2pay analyze photo.jpg                  # faces, boxes, quality checks, smile AUs
  smile2pay analyze a.jpg b.png --json         # everything: landmarks, every AU probability
  smile2pay analyze frame.jpg --pad            # also the presentation-attack score of each face
exit: 0 every image has a face, 1 an image has none, 2 an image cannot be read""")
def cmd_analyze(args) -> tuple[Any, int]:
    """Find the faces in photos: box, quality, smile AUs.

    Exit 1 when a photo holds no face, 2 when one cannot be read."""
    from ..errors import RequestError
    from ..pipeline import FacePipeline

    if args.policy and not args.pad:
        raise RequestError("--policy only sets the PAD threshold analyze reports against: add --pad",
                           code="REQUEST_INVALID")
    pipe = FacePipeline(settings_from(args))
    pad = policy = None
    if args.pad:
        from ..decision.policy import CALIBRATION_DIR, Policy
        from ..vision.pad import PresentationAttackDetector

        policy = Policy.from_calibration(args.policy or CALIBRATION_DIR / "mobile.json")
        pad = PresentationAttackDetector.from_pipeline(pipe, threshold=policy.pad_threshold)
    results = []
    errors = faceless = 0
    for path in args.images:
        try:
            img = pipe.load(path)
            faces = pipe.analyze(img, embed=not args.no_embed)
            dicts = [f.to_dict() for f in faces]
            if pad is not None:
                for f, d in zip(faces, dicts):
                    small = min(f.width, f.height) < policy.pad_min_face_px
                    p = None if small else round(float(pad.score(img, f.bbox)), 4)
                    d["pad"] = {"p_real": p, "bona_fide": None if p is None else p >= policy.pad_threshold,
                                "threshold": policy.pad_threshold, "min_face_px": policy.pad_min_face_px}
            results.append({"image": path, "faces": dicts, "count": len(faces)})
            faceless += not faces
        except Smile2PayError as e:
            errors += 1
            results.append({"image": path, **e.to_dict()})
    code = 2 if errors else 1 if faceless else 0
    return {"images": results, "providers": {k: v.to_dict() for k, v in pipe.providers.items()}}, code


# ---------------------------------------------------------------------------------- demo
def _cfg_demo(p):
    p.add_argument("--data", help="data folder holding samples/ (default: SMILE2PAY_DATA, ../shared/data)")
    p.add_argument("--gallery", help="keep the demo gallery in this folder (default: a temporary one)")


def _human_demo(res: dict, code: int) -> str:
    from ..demo import report

    return report(res)


@command("demo", _cfg_demo, human=_human_demo, examples="""\
examples:
  smile2pay demo                       # a short report: who was enrolled, which threshold, what passed
  smile2pay demo --json > demo.json    # every score
exit: 0 every decision as expected, 1 otherwise""")
def cmd_demo(args) -> tuple[Any, int]:
    """Enrol the sample people, verify them, pay with a smile.

    The main job on the shared sample photos (SMILE2PAY_DATA). Enrols each person of samples/deepface from one photo and checks their other photos (should pass)
    and claims of someone else (should fail); then enrols CK+ subjects from a neutral frame and runs
    the payment decision on real bursts: a neutral -> smile burst (should pay), a still smile photo
    and another person's smile (should not)."""
    from ..demo import run_demo

    res = run_demo(args.data, models=args.models, gallery=args.gallery, progress=not args.json)
    cases = res["smile_to_pay"].get("cases", [])
    ok = (res["genuine"]["accepted"] > 0 and res["impostor"]["accepted"] == 0
          and all(c["approved"] == c["expected"] for c in cases))
    return res, 0 if ok else 1


# ---------------------------------------------------------------------------------- main
#: modules that register further commands with @command (imported by build_parser)
COMMAND_MODULES = ("smile2pay.cli.gallery", "smile2pay.cli.au", "smile2pay.cli.verify", "smile2pay.cli.bench",
                   "smile2pay.cli.stream")

EPILOG = """\
first steps:
  smile2pay demo                                   enrol the sample people, verify them, pay with a smile
  smile2pay compare a.jpg b.jpg                    are two photos the same person?
  smile2pay enroll --gallery shop --create alice alice.jpg
  smile2pay verify --gallery shop alice neutral.jpg smile.jpg

`smile2pay COMMAND --help` shows a command's options and examples. Every command takes --json
(stdout is then one JSON value) and exits 0 on success, 1 on a negative result, 2 on bad input."""


def _ordered(names) -> list[str]:
    rank = {n: i for i, n in enumerate(COMMAND_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    parser = ArgumentParser(prog="smile2pay", description="smile2pay: pay by looking at a camera and smiling "
                                                          "(face verification SDK).",
                            epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"smile2pay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in _ordered(COMMANDS):
        configure, _ = COMMANDS[name]
        info = COMMAND_INFO.get(name) or {"help": "", "description": "", "examples": None, "models": True}
        p = sub.add_parser(name, help=info["help"] or None, description=info["description"] or None,
                           epilog=info["examples"], formatter_class=HelpFormatter)
        configure(p)
        _common(p, models=info["models"])
    return parser


def _usage_error(err: UsageError, argv: list[str], want_json: bool) -> int:
    """argparse's refusal: its usage + message on stderr; with --json also as a JSON error on stdout."""
    p = err.parser
    cmd = p.prog.split()[1] if len(p.prog.split()) > 1 else None
    hint = hint_for("USAGE", argparse.Namespace(command=cmd))
    sys.stderr.write(p.format_usage())
    sys.stderr.write(f"{p.prog}: error: {err.message}\n  next: {hint}\n")
    if want_json:
        sys.stdout.write(json.dumps({"error": {"type": "UsageError", "code": "USAGE", "message": err.message,
                                               "usage": " ".join(p.format_usage().split()),
                                               "hint": hint}}) + "\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return _usage_error(e, argv, want_json)
    except SystemExit as e:  # --help / --version exit 0
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
            if args.json:
                log.error("%s", e)
        except ModuleNotFoundError as e:   # an optional package imported deep inside a command
            err = _as_extra_missing(e, args.command)
            if err is None:
                raise
            payload, code = err.to_dict(), err.exit_code
            if args.json:
                log.error("%s", err)
        except KeyboardInterrupt:
            payload, code = {"error": {"type": "Interrupted", "code": "INTERRUPTED", "message": "interrupted"}}, 130
        payload = _with_hint(payload, args)
        if args.json:
            out.write(json.dumps(payload, default=str) + "\n")
        else:
            _print_human(payload, out, args, code)
    return code
