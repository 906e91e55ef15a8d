"""Identity / expression dataset loaders for the benchmarks (``smile2pay bench``, ``smile2pay calibrate``).

Two shapes of data, so that a user can run the same benches on their own images:

* **pairs** (:class:`Pair`): verification trials.
  - :func:`load_lfw_pairs_txt`: LFW's ``pairs.txt`` (header ``folds n``; then per fold ``n`` lines
    ``name i j`` (genuine) and ``n`` lines ``name1 i name2 j`` (impostor)); images
    ``<root>/<name>/<name>_<iiii>.jpg``.
  - :func:`load_pairs_csv`: a CSV with columns ``path_a,path_b,same`` and optionally ``fold``,
    ``subject_a``, ``subject_b``, ``group`` (or ``group_a``/``group_b``; any column can be named).
* **labelled images** (:class:`IdSample`): a subject, an expression, AU codes, a group.
  - :func:`load_identity_csv`: generic ``path,subject,expression,au_codes[,group]``.
  - :func:`load_ckplus_expr`: CK+48 and/or the CK+ neutral+peak folder through
    :mod:`smile2pay_tools.datasets` (the AU loaders), expression = emotion label or AU combination.
  - :func:`load_lfw_manifest`: LFW's ``manifest.csv`` (expression = the muxspace label).

Paths in a CSV are relative to ``root`` when given, else to the CSV's folder, else to the nearest
parent folder of the CSV in which the first path exists (the shared data's CSVs are relative to the
data folder). Groups label a population (e.g. a demographic group, a capture site): the reports give
FAR per group where they exist. Bad input raises :class:`~smile2pay.errors.RequestError`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .datasets import AUSample, load_ckplus48, load_ckplus_neutral_peak, parse_au_codes
from smile2pay.errors import RequestError

__all__ = ["Pair", "IdSample", "load_pairs", "load_lfw_pairs_txt", "load_pairs_csv", "load_identity_csv",
           "load_ckplus_expr", "load_lfw_manifest", "load_dataset", "pair_group", "attach_groups"]


@dataclass(frozen=True)
class Pair:
    path_a: str            # absolute (or as given) image paths
    path_b: str
    same: bool
    fold: int | None = None
    subject_a: str = ""
    subject_b: str = ""
    group_a: str = ""
    group_b: str = ""

    @property
    def group(self) -> str:
        return pair_group(self.group_a, self.group_b)


@dataclass(frozen=True)
class IdSample:
    path: str
    subject: str
    expression: str = ""
    aus: frozenset = frozenset()
    group: str = ""
    source: str = ""


def pair_group(a: str, b: str) -> str:
    """The group of a pair: the shared group when both sides agree, ``"a|b"`` (sorted) across groups,
    ``""`` when unlabelled. FAR per group is read on same-group impostor pairs (ISO/IEC 19795-10 style)."""
    if not a and not b:
        return ""
    if a == b:
        return a
    return "|".join(sorted((a or "?", b or "?")))


def _read(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise RequestError(f"file not found: {path}", code="DATASET_NOT_FOUND", file=str(path)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RequestError(f"cannot read {path}: {e}", code="DATASET_INVALID", file=str(path)) from None


def _base(csv_path: Path, root: str | Path | None, first: str | None) -> Path:
    if root is not None:
        return Path(root)
    if first is None or Path(first).is_absolute():
        return csv_path.parent
    for cand in [csv_path.parent, *csv_path.resolve().parents]:
        if (cand / first).exists():
            return cand
    return csv_path.parent


def _abs(base: Path, p: str) -> str:
    q = Path(p)
    return str(q if q.is_absolute() else base / q)


def _need(rows: list[dict], cols: tuple, path: Path) -> None:
    if not rows:
        raise RequestError(f"{path} has no rows", code="DATASET_INVALID", file=str(path))
    miss = [c for c in cols if c not in rows[0]]
    if miss:
        raise RequestError(f"{path}: missing column(s) {miss}; has {list(rows[0])}", code="DATASET_INVALID",
                           file=str(path))


def _bool(v: str, path: Path) -> bool:
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "same", "genuine"):
        return True
    if s in ("0", "false", "no", "different", "impostor"):
        return False
    raise RequestError(f"{path}: 'same' must be 1/0 or true/false, got {v!r}", code="DATASET_INVALID")


# ------------------------------------------------------------------------------------------ pairs
def load_lfw_pairs_txt(pairs_txt: str | Path, root: str | Path | None = None) -> list[Pair]:
    """LFW View-2 ``pairs.txt``. ``root``: the folder of the ``<name>/`` image folders (default: the
    file's folder, or its ``lfw-deepfunneled/``, ``lfw/`` sub-folder when the images are there)."""
    p = Path(pairs_txt)
    try:
        lines = [ln.split() for ln in p.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise RequestError(f"file not found: {p}", code="DATASET_NOT_FOUND", file=str(p)) from None
    if not lines or len(lines[0]) not in (1, 2) or not all(x.isdigit() for x in lines[0]):
        raise RequestError(f"{p}: first line must be '<folds> <pairs per class>'", code="DATASET_INVALID")
    folds, n = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, int(lines[0][0]))
    body = lines[1:]
    if root is None:
        root = p.parent
        for sub in ("lfw-deepfunneled", "lfw_funneled", "lfw"):
            if (p.parent / sub).is_dir():
                root = p.parent / sub
                break
    root = Path(root)
    out = []
    for i, t in enumerate(body):
        fold = i // (2 * n) if folds > 1 else 0
        try:
            if len(t) == 3:
                a, b = root / t[0] / f"{t[0]}_{int(t[1]):04d}.jpg", root / t[0] / f"{t[0]}_{int(t[2]):04d}.jpg"
                out.append(Pair(str(a), str(b), True, fold, t[0], t[0]))
            elif len(t) == 4:
                a, b = root / t[0] / f"{t[0]}_{int(t[1]):04d}.jpg", root / t[2] / f"{t[2]}_{int(t[3]):04d}.jpg"
                out.append(Pair(str(a), str(b), False, fold, t[0], t[2]))
            else:
                raise ValueError(t)
        except ValueError:
            raise RequestError(f"{p}: line {i + 2} is not 'name i j' or 'name1 i name2 j': {' '.join(t)}",
                               code="DATASET_INVALID", line=i + 2) from None
    return out


def load_pairs_csv(csv_path: str | Path, root: str | Path | None = None, *, group_col: str | None = None
                   ) -> list[Pair]:
    """CSV ``path_a,path_b,same[,fold][,subject_a,subject_b][,group | group_a,group_b]``.

    ``group_col``: a column naming the pair's group, or a stem ``X`` for columns ``X_a``/``X_b``
    (e.g. ``expression`` on the shared LFW pairs.csv)."""
    p = Path(csv_path)
    rows = _read(p)
    _need(rows, ("path_a", "path_b", "same"), p)
    base = _base(p, root, rows[0]["path_a"])
    gc = group_col
    if gc is None:
        gc = "group" if "group" in rows[0] or "group_a" in rows[0] else None
    if gc is not None and gc not in rows[0] and f"{gc}_a" not in rows[0]:
        raise RequestError(f"{p}: no column {gc!r} or {gc}_a/{gc}_b", code="DATASET_INVALID")
    out = []
    for r in rows:
        ga = gb = ""
        if gc is not None:
            if f"{gc}_a" in r:
                ga, gb = r.get(f"{gc}_a") or "", r.get(f"{gc}_b") or ""
            else:
                ga = gb = r.get(gc) or ""
        fold = r.get("fold")
        out.append(Pair(_abs(base, r["path_a"]), _abs(base, r["path_b"]), _bool(r["same"], p),
                        int(fold) if fold not in (None, "") else None, r.get("subject_a", "") or "",
                        r.get("subject_b", "") or "", ga, gb))
    return out


def load_pairs(path: str | Path, root: str | Path | None = None, *, group_col: str | None = None) -> list[Pair]:
    """``pairs.txt`` (LFW format) or a CSV, told apart by the file's first line."""
    p = Path(path)
    if not p.is_file():
        raise RequestError(f"pairs file not found: {p}", code="DATASET_NOT_FOUND", file=str(p))
    with open(p, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    if "," in first:
        return load_pairs_csv(p, root, group_col=group_col)
    return load_lfw_pairs_txt(p, root)


def attach_groups(pairs: list[Pair], labels_csv: str | Path, column: str, root: str | Path | None = None
                  ) -> tuple[list[Pair], int]:
    """Label each pair side with ``column`` of a ``path,...`` manifest (joined on resolved path).
    Returns (pairs, number of sides left unlabelled)."""
    from dataclasses import replace

    p = Path(labels_csv)
    rows = _read(p)
    _need(rows, ("path", column), p)
    base = _base(p, root, rows[0]["path"])
    lab = {str(Path(_abs(base, r["path"])).resolve()): r[column] or "" for r in rows}
    missing = 0
    out = []
    for q in pairs:
        ga = lab.get(str(Path(q.path_a).resolve()), "")
        gb = lab.get(str(Path(q.path_b).resolve()), "")
        missing += (ga == "") + (gb == "")
        out.append(replace(q, group_a=ga, group_b=gb))
    return out, missing


# ---------------------------------------------------------------------------------- labelled images
def load_identity_csv(csv_path: str | Path, root: str | Path | None = None, *, expression_col: str = "expression",
                      group_col: str = "group") -> list[IdSample]:
    """Generic ``path,subject,expression,au_codes[,group]`` (``expression`` or ``au_codes`` may be
    missing, not both: with no expression column the AU combination is the expression)."""
    p = Path(csv_path)
    rows = _read(p)
    _need(rows, ("path", "subject"), p)
    has_expr, has_au = expression_col in rows[0], "au_codes" in rows[0]
    if not has_expr and not has_au:
        raise RequestError(f"{p}: needs an {expression_col!r} or 'au_codes' column", code="DATASET_INVALID")
    base = _base(p, root, rows[0]["path"])
    out = []
    for r in rows:
        try:
            aus = parse_au_codes(r.get("au_codes")) if has_au else frozenset()
        except ValueError as e:
            raise RequestError(f"{p}: {e}", code="DATASET_INVALID") from None
        expr = r.get(expression_col, "") if has_expr else au_combination(aus)
        out.append(IdSample(_abs(base, r["path"]), str(r["subject"]), expr or "", aus, r.get(group_col, "") or "",
                            p.stem))
    return out


def au_combination(aus) -> str:
    return "+".join(f"AU{a}" for a in sorted(aus)) if aus else "none"


def _from_au(s: AUSample, expression: str) -> IdSample:
    label = "neutral" if s.neutral else s.label
    expr = au_combination(s.aus) if expression == "au" else label
    return IdSample(s.path, s.subject, expr, s.aus, "", s.source)


def load_ckplus_expr(data_dir: str | Path, which: str = "all", expression: str = "emotion") -> list[IdSample]:
    """CK+ through the AU loaders. ``which``: ``ckplus48``, ``neutral_peak`` or ``all``;
    ``expression``: ``emotion`` (label; neutral frames 'neutral') or ``au`` (AU combination, e.g.
    ``AU6+AU12+AU25``; neutral frames ``none``)."""
    if expression not in ("emotion", "au"):
        raise RequestError(f"expression must be 'emotion' or 'au', got {expression!r}", code="REQUEST_INVALID")
    try:
        samples: list[AUSample] = []
        if which in ("ckplus48", "all"):
            samples += load_ckplus48(data_dir)
        if which in ("neutral_peak", "all"):
            samples += load_ckplus_neutral_peak(data_dir)
    except FileNotFoundError as e:
        raise RequestError(f"CK+ data not found under {data_dir}: {e}", code="DATASET_NOT_FOUND") from None
    if not samples:
        raise RequestError(f"unknown CK+ selection {which!r}", code="REQUEST_INVALID")
    return [_from_au(s, expression) for s in samples]


def load_lfw_manifest(data_dir: str | Path) -> list[IdSample]:
    """LFW ``lfw/manifest.csv`` (expression = the muxspace crowd label, '' when unlabelled)."""
    p = Path(data_dir) / "lfw" / "manifest.csv"
    rows = _read(p)
    return [IdSample(str(Path(data_dir) / r["path"]), r["subject"], r.get("label", "") or "", frozenset(), "", "lfw")
            for r in rows]


def load_dataset(spec: str, data_dir: str | Path, *, expression: str = "emotion") -> list[IdSample]:
    """``ckplus`` | ``ckplus48`` | ``ckplus_neutral_peak48`` | ``lfw`` | a CSV path."""
    if spec in ("ckplus", "ck+", "ckplus_all"):
        return load_ckplus_expr(data_dir, "all", expression)
    if spec == "ckplus48":
        return load_ckplus_expr(data_dir, "ckplus48", expression)
    if spec in ("ckplus_neutral_peak48", "neutral_peak"):
        return load_ckplus_expr(data_dir, "neutral_peak", expression)
    if spec == "lfw":
        return load_lfw_manifest(data_dir)
    p = Path(spec)
    if p.suffix.lower() == ".csv" or p.is_file():
        return load_identity_csv(p)
    raise RequestError(f"unknown dataset {spec!r}: use ckplus, ckplus48, ckplus_neutral_peak48, lfw or a CSV file",
                       code="REQUEST_INVALID")
