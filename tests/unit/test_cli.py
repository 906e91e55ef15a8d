"""The CLI as a user runs it, where no weights or images are needed: a real subprocess, stdout must be pure
JSON with --json (usage errors, help, missing models)."""
import json

import pytest

from helpers import run


def test_models_check_missing_is_exit_1(tmp_path):
    code, out, _ = run("models", "check", "--models", str(tmp_path), "--json", env_extra={"HOME": str(tmp_path)})
    d = json.loads(out)
    assert code == 1 and d["ok"] is False
    assert any(not m["present"] for m in d["models"])


def test_analyze_missing_models_exit_2(tmp_path, t1_path):
    code, out, _ = run("analyze", str(t1_path), "--models", str(tmp_path), "--json",
                       env_extra={"HOME": str(tmp_path)})
    assert code == 2
    assert json.loads(out)["error"]["code"] == "MODEL_MISSING"


def test_usage_error_json():
    code, out, _ = run("analyze", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "USAGE"


@pytest.mark.parametrize("cmd", ["models", "analyze"])
def test_help(cmd):
    code, out, _ = run(cmd, "--help")
    assert code == 0 and "--json" in out


def test_human_output_prints_numpy_values():
    """A command result holding numpy arrays or scalars (train-au's summary does) prints, never raises."""
    import numpy as np

    from smile2pay.cli.main import as_lines

    lines = as_lines({"empty": np.array([]), "pair": np.array([1, 2]), "x": np.float32(0.25), "none": None})
    text = "\n".join(lines)
    assert "empty" in text and "1, 2" in text and "0.25" in text
