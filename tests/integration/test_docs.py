"""The runnable examples in the docs run (on the shared data) and say what they claim."""
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_integration_example_runs(tmp_path, data_dir, monkeypatch, capsys):
    src = (DOCS / "integration.md").read_text()
    block = re.findall(r"```python\n(.*?)```", src, re.S)[1]
    assert "ckplus_neutral_peak48" in block
    block = block.replace('"../shared/data/"', repr(str(data_dir) + "/")).replace(
        '"/tmp/demo-gallery"', repr(str(tmp_path / "g")))
    exec(compile(block, "docs/integration.md", "exec"), {})
    out = capsys.readouterr().out.split()
    assert out[0] == "True"          # the documented neutral -> smile burst is approved
