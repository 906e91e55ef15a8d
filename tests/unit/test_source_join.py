"""The training caches' label join (smile2pay_tools.train.sources._join): a cache built with one spelling of the
data folder serves another; a cache of other data is a clear error, not a KeyError."""
from pathlib import Path

import numpy as np
import pytest

from smile2pay_tools.train.sources import _join

ROWS = [{"path": "ferplus/FER2013Train/a.png", "split": "FER2013Train"},
        {"path": "ferplus/FER2013Test/b.png", "split": "FER2013Test"}]


@pytest.mark.parametrize("built_with", ["../shared/data", "/abs/where/data", "data"])
@pytest.mark.parametrize("run_with", ["../shared/data", "/work/shared/data"])
def test_join_matches_on_the_path_inside_the_data_folder(built_with, run_with):
    cache = {"path": np.array([f"{built_with}/ferplus/FER2013Test/b.png", f"{built_with}/ferplus/FER2013Train/a.png"])}
    out = _join(cache, ROWS, Path(run_with), ["split"])
    assert out["split"].tolist() == ["FER2013Test", "FER2013Train"]
    assert out["path"].tolist() == [str(Path(run_with) / "ferplus/FER2013Test/b.png"),
                                    str(Path(run_with) / "ferplus/FER2013Train/a.png")]


def test_join_refuses_a_cache_of_other_data():
    cache = {"path": np.array(["../shared/data/ferplus/FER2013Train/a.png", "../shared/data/ferplus/Other/c.png"])}
    with pytest.raises(ValueError, match="delete the cache folder"):
        _join(cache, ROWS, Path("../shared/data"), ["split"])
