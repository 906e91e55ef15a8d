"""AU data loaders: CK+ (original layout), CK+48 (as staged in ../shared/data), a generic CSV manifest.

Every loader returns a list of :class:`AUSample`: an image path, a subject id (splits are always
made by subject), and the set of FACS action units present (an empty set = AU-negative, e.g. the
neutral first frame of a CK+ sequence). Intensities are not used: presence only.

* :func:`load_ckplus_original`: ``cohn-kanade-images/S005/001/*.png`` + ``FACS/S005/001/*_facs.txt``
  (the official CK+ distribution). The last frame of each coded sequence carries the FACS codes
  (``peak_frames`` last frames, default 1), the first frame is AU-negative.
* :func:`load_ckplus48`: ``ckplus48/manifest.csv`` (3 last frames of each of the 327 sequences).
* :func:`load_ckplus_neutral_peak`: ``ckplus_neutral_peak48/manifest.csv`` (neutral first frames,
  AU-negative, + one peak frame per labelled sequence).
* :func:`load_csv_manifest`: ``path,subject,au_codes`` (``au_codes``: ``6;12;25``, ``6+12`` or
  ``AU6 AU12``; empty = no AU), paths relative to the CSV's folder or to ``root``: bring
  EmotioNet / DISFA / BP4D frames this way (binarise intensities first, e.g. >= 2 on DISFA's 0-5).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AUSample", "parse_au_codes", "load_ckplus48", "load_ckplus_neutral_peak", "load_ckplus_original",
           "load_csv_manifest", "load_ckplus_all", "subject_folds"]


@dataclass(frozen=True)
class AUSample:
    path: str                          # absolute path of the image
    subject: str
    aus: frozenset = field(default_factory=frozenset)   # FACS AU numbers present
    source: str = ""                   # loader / dataset name
    sequence: str = ""                 # video/sequence id ('' if unknown)
    label: str = ""                    # emotion or other label, informational
    neutral: bool = False              # a neutral (AU-negative by construction) frame


_AU_SPLIT = re.compile(r"[;,+\s/|]+")


def parse_au_codes(text: str | None) -> frozenset:
    """``'6;12;25'`` / ``'AU6+AU12'`` / ``'1.7e1'`` -> frozenset({6, 12, 25}). Intensity suffixes
    (``12E``) and side prefixes (``L12``/``R12``) are dropped; empty -> empty set."""
    if text is None:
        return frozenset()
    out = set()
    for tok in _AU_SPLIT.split(str(text).strip()):
        tok = tok.strip().upper()
        if not tok:
            continue
        tok = re.sub(r"^AU", "", tok)
        tok = re.sub(r"^[LRTBU](?=\d)", "", tok)
        m = re.match(r"^(\d+(?:\.\d+)?(?:E[+-]?\d+)?)", tok)
        if not m:
            raise ValueError(f"cannot parse AU code {tok!r} in {text!r}")
        val = float(m.group(1)) if ("." in m.group(1) or "E" in m.group(1)) else int(m.group(1))
        au = int(round(val))
        if au <= 0:
            raise ValueError(f"AU code must be positive, got {tok!r} in {text!r}")
        out.add(au)
    return frozenset(out)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_ckplus48(data_dir: str | Path) -> list[AUSample]:
    """CK+48 as staged: ``<data_dir>/ckplus48/manifest.csv`` (paths relative to ``data_dir``)."""
    root = Path(data_dir)
    rows = _read_csv(root / "ckplus48" / "manifest.csv")
    return [AUSample(path=str(root / r["path"]), subject=r["subject"], aus=parse_au_codes(r["au_codes"]),
                     source="ckplus48", sequence=r["sequence"], label=r["label"]) for r in rows]


def load_ckplus_neutral_peak(data_dir: str | Path) -> list[AUSample]:
    """``<data_dir>/ckplus_neutral_peak48/manifest.csv``: neutral first frames (no AU) + peak frames."""
    root = Path(data_dir)
    rows = _read_csv(root / "ckplus_neutral_peak48" / "manifest.csv")
    out = []
    for r in rows:
        neutral = r["label"] == "neutral"
        out.append(AUSample(path=str(root / r["path"]), subject=r["subject"],
                            aus=frozenset() if neutral else parse_au_codes(r["au_codes"]),
                            source="ckplus_neutral_peak48", sequence=r["sequence"], label=r["label"],
                            neutral=neutral))
    return out


def load_ckplus_all(data_dir: str | Path) -> list[AUSample]:
    return load_ckplus48(data_dir) + load_ckplus_neutral_peak(data_dir)


def load_ckplus_original(root: str | Path, peak_frames: int = 1, neutral_frames: int = 1) -> list[AUSample]:
    """Official CK+ layout: ``root/cohn-kanade-images/S###/###/S###_###_########.png`` and
    ``root/FACS/S###/###/S###_###_########_facs.txt`` (lines ``AU intensity`` as floats).

    Only sequences with a FACS file are used. The last ``peak_frames`` frames get the sequence's
    AUs, the first ``neutral_frames`` frames are AU-negative (``neutral=True``)."""
    root = Path(root)
    img_root, facs_root = root / "cohn-kanade-images", root / "FACS"
    if not img_root.is_dir() or not facs_root.is_dir():
        raise FileNotFoundError(f"{root} has no cohn-kanade-images/ and FACS/ folders (official CK+ layout)")
    out = []
    for facs in sorted(facs_root.glob("S*/*/*_facs.txt")):
        subj, seq = facs.parent.parent.name, facs.parent.name
        aus = set()
        for line in facs.read_text().splitlines():
            parts = line.split()
            if parts:
                aus.add(int(round(float(parts[0]))))
        frames = sorted((img_root / subj / seq).glob("*.png"))
        if not frames:
            continue
        seq_id = f"{subj}_{seq}"
        n_neu = min(neutral_frames, max(len(frames) - peak_frames, 0))
        for p in frames[:n_neu]:
            out.append(AUSample(str(p), subj, frozenset(), "ckplus", seq_id, "neutral", True))
        for p in frames[-peak_frames:]:
            out.append(AUSample(str(p), subj, frozenset(aus), "ckplus", seq_id, "peak", False))
    return out


def load_csv_manifest(csv_path: str | Path, root: str | Path | None = None,
                      path_col: str = "path", subject_col: str = "subject", au_col: str = "au_codes",
                      source: str | None = None) -> list[AUSample]:
    """Generic manifest with columns ``path,subject,au_codes`` (names configurable)."""
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    rows = _read_csv(csv_path)
    if rows and (path_col not in rows[0] or subject_col not in rows[0] or au_col not in rows[0]):
        raise ValueError(f"{csv_path}: needs columns {path_col},{subject_col},{au_col}; has {list(rows[0])}")
    out = []
    for r in rows:
        p = Path(r[path_col])
        aus = parse_au_codes(r[au_col])
        out.append(AUSample(path=str(p if p.is_absolute() else base / p), subject=str(r[subject_col]), aus=aus,
                            source=source or csv_path.stem, sequence=r.get("sequence", "") or "",
                            label=r.get("label", "") or "", neutral=not aus and r.get("label") == "neutral"))
    return out


def subject_folds(subjects, k: int = 5, seed: int = 0) -> dict[str, int]:
    """Deterministic subject -> fold (0..k-1) assignment, balanced by subject count."""
    import random

    uniq = sorted(set(subjects))
    rng = random.Random(seed)
    rng.shuffle(uniq)
    return {s: i % k for i, s in enumerate(uniq)}
