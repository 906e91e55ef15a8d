"""AU loaders on the real manifests (and a tiny CK+-original layout built in tmp)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smile2pay_tools.datasets import (load_ckplus48, load_ckplus_neutral_peak, load_ckplus_original, load_csv_manifest,
                                parse_au_codes, subject_folds)


def test_parse_au_codes():
    assert parse_au_codes("6;12;25") == {6, 12, 25}
    assert parse_au_codes("AU6+AU12") == {6, 12}
    assert parse_au_codes("1.7e1 L12 4E") == {17, 12, 4}
    assert parse_au_codes("") == frozenset()
    with pytest.raises(ValueError):
        parse_au_codes("six")


def test_ckplus48_manifest(data_dir):
    s = load_ckplus48(data_dir)
    assert len(s) == 981
    assert len({x.subject for x in s}) == 118
    assert sum(1 for x in s if {6, 12} <= x.aus) == 201
    assert Path(s[0].path).is_file()


def test_ckplus_neutral_peak_manifest(data_dir):
    s = load_ckplus_neutral_peak(data_dir)
    assert len(s) == 890
    neu = [x for x in s if x.neutral]
    assert len(neu) == 575 and all(not x.aus for x in neu)
    assert all(x.aus for x in s if x.label == "happiness")


def test_csv_manifest_and_folds(data_dir, tmp_path):
    rows = load_ckplus48(data_dir)[:20]
    csv = tmp_path / "m.csv"
    csv.write_text("path,subject,au_codes\n" + "".join(f"{r.path},{r.subject},{'+'.join(map(str, sorted(r.aus)))}\n"
                                                       for r in rows))
    got = load_csv_manifest(csv)
    assert [g.aus for g in got] == [r.aus for r in rows]
    assert [g.path for g in got] == [r.path for r in rows]
    folds = subject_folds([r.subject for r in load_ckplus48(data_dir)], k=5)
    counts = np.bincount(list(folds.values()))
    assert counts.max() - counts.min() <= 1


def test_ckplus_original_layout(data_dir, tmp_path):
    """The official layout: first frame neutral, last frame carries the FACS codes (real CK+48 pixels)."""
    import shutil

    src = load_ckplus48(data_dir)[0].path
    seq = tmp_path / "cohn-kanade-images" / "S010" / "004"
    seq.mkdir(parents=True)
    for i in range(1, 4):
        shutil.copy(src, seq / f"S010_004_{i:08d}.png")
    facs = tmp_path / "FACS" / "S010" / "004"
    facs.mkdir(parents=True)
    (facs / "S010_004_00000003_facs.txt").write_text("   4.0000000e+00   3.0000000e+00\n   1.7000000e+01   0\n")
    s = load_ckplus_original(tmp_path)
    assert [x.neutral for x in s] == [True, False]
    assert s[0].aus == frozenset() and s[1].aus == {4, 17}
    assert s[1].path.endswith("00000003.png")
