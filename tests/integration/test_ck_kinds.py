"""The CK+ pair kinds the smile gate is calibrated and benchmarked on (the real pairs CSV, no images)."""
import json
from pathlib import Path

from smile2pay_tools.bench.clips import ck_kind, ck_pairs

CALIBRATION = Path(__file__).resolve().parents[2] / "smile2pay" / "decision" / "calibration" / "mobile.json"


def test_ambiguous_ck_sequences_are_the_four_happy_ones_not_coded_au6_au12(data_dir):
    rows = ck_pairs(data_dir)
    kinds = [ck_kind(r) for r in rows]
    amb = sorted(r["sequence"] for r, k in zip(rows, kinds) if k == "ambiguous")
    assert amb == ["S056_004", "S129_012", "S135_012", "S137_011"]
    assert all(r["peak_label"] == "happy" and r["is_smile_au6_au12"] == "0"
               for r, k in zip(rows, kinds) if k == "ambiguous")
    assert kinds.count("smile") == 61 and kinds.count("other") == len(rows) - 65


def test_shipped_au_calibration_was_chosen_without_the_ambiguous_sequences(data_dir):
    """The shipped operating point's CK+ population: the 61 smiles and the other expressions, not the four
    happy-labelled sequences (benchmarks/au_cross_population.py reports those on their own)."""
    rows = ck_pairs(data_dir)
    others = sum(ck_kind(r) == "other" for r in rows)
    cal = json.loads(CALIBRATION.read_text())
    ck = cal["au"]["AU12"]["chosen_at"]["ckplus_oof_pairs"]
    assert ck["smiles"] == 61 and ck["others"] == others == 244
