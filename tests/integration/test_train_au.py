"""Training: the --smoke run (seconds), ONNX export checked against torch on real crops, resume.

Needs the ``train`` extra (torch, onnx); skipped cleanly without it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir, models_dir):
    from smile2pay_tools.train.run import run

    out = tmp_path_factory.mktemp("au_smoke")
    summary = run(data_dir, models_dir, out, smoke=True, lfw_n=8, progress=False)
    return out, summary


def test_smoke_run_exports_one_onnx_file_matching_torch(smoke):
    import onnx

    out, s = smoke
    path = out / "au_mobile.onnx"
    assert path.is_file() and s["onnx_bytes"] == path.stat().st_size
    assert not [p for p in out.iterdir() if p.suffix == ".data"]          # no external data
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["au_names"])[:2] == ["AU1", "AU2"]
    # ONNX (onnxruntime) vs torch on real CK+ AU crops through the runtime preprocessing
    assert s["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert s["n_gt"] > 0 and s["n_pseudo"] > 0
    assert np.isfinite(s["final_history"][-1]["loss"])


def test_onnx_matches_torch_on_real_crops(smoke, data_dir, pipeline):
    """Independent check: rebuild the torch net from the checkpoint, compare on freshly made crops."""
    from smile2pay_tools.datasets import load_ckplus_neutral_peak
    from smile2pay_tools.train.au_train import TrainConfig
    from smile2pay_tools.train.model import AUNet
    from smile2pay_tools.train.run import torch_onnx_max_diff

    out, s = smoke
    st = torch.load(out / "final" / "checkpoint.pt", weights_only=False)
    cfg = TrainConfig(**{**st["config"], "aus": tuple(st["config"]["aus"])})
    net = AUNet(len(cfg.aus), cfg.emb_dim, cfg.input_size, cfg.width)
    net.load_state_dict(st["net"])
    net.eval()
    crops = []
    for smp in load_ckplus_neutral_peak(data_dir)[:6]:
        f = pipeline.single(smp.path, pick="largest", embed=False, au=False)
        crops.append(f.crop("au", 112))
    assert torch_onnx_max_diff(net, out / "au_mobile.onnx", np.stack(crops), cfg.input_size) < 1e-4


def test_resume_from_checkpoint(smoke, data_dir, models_dir):
    from smile2pay_tools.train.run import run

    out, s = smoke
    again = run(data_dir, models_dir, out, smoke=True, lfw_n=8, progress=False)   # checkpoint at the last epoch
    assert again["final_history"] == s["final_history"]                            # nothing retrained


def test_losses():
    from smile2pay_tools.train.model import ArcFaceHead, focal_bce, focal_softmax_loss

    torch.manual_seed(0)
    head = ArcFaceHead(8, 3, s=64.0, m=0.3)
    emb = torch.randn(5, 8)
    lab = torch.tensor([0, 1, 2, 0, 1])
    logits = head(emb, lab)
    plain = 64.0 * torch.nn.functional.linear(torch.nn.functional.normalize(emb),
                                              torch.nn.functional.normalize(head.weight))
    assert torch.all(logits.gather(1, lab[:, None]) < plain.gather(1, lab[:, None]))   # margin lowers the target
    assert float(focal_softmax_loss(logits, lab).detach()) > 0
    w = torch.ones(5, 3)
    easy = focal_bce(torch.full((5, 3), 8.0), torch.ones(5, 3), w)
    hard = focal_bce(torch.full((5, 3), -8.0), torch.ones(5, 3), w)
    assert float(easy) < 1e-4 < float(hard)


def test_seed_ensemble_onnx_is_the_mean_of_its_members(smoke, tmp_path, data_dir, models_dir, pipeline):
    """Two real (smoke-trained) members with different seeds -> one ONNX: probabilities are the members'
    mean, the embedding their unit-norm concatenation; members that do not fit together are refused."""
    import shutil

    import onnxruntime as ort

    from smile2pay_tools.datasets import load_ckplus_neutral_peak
    from smile2pay_tools.train.ensemble import combine_au_onnx
    from smile2pay_tools.train.run import run

    out0, _ = smoke
    out1 = tmp_path / "seed1"
    shutil.copytree(out0 / "cache", out1 / "cache")
    run(data_dir, models_dir, out1, smoke=True, lfw_n=8, progress=False, seed=1)
    members = [out0 / "au_mobile.onnx", out1 / "au_mobile.onnx"]
    ens = combine_au_onnx(members, tmp_path / "ens.onnx")
    crops = [pipeline.single(s.path, pick="largest", embed=False, au=False).crop("au", 112)
             for s in load_ckplus_neutral_peak(data_dir)[:4]]
    size = 32
    from smile2pay_tools.train.au_train import plain_batch

    x = plain_batch(np.stack(crops), size)
    outs = [ort.InferenceSession(str(p)).run(["au_probs", "au_embedding"], {"input": x}) for p in members]
    assert not np.allclose(outs[0][0], outs[1][0])                     # two different members
    p, e = ort.InferenceSession(str(ens)).run(["au_probs", "au_embedding"], {"input": x})
    np.testing.assert_allclose(p, (outs[0][0] + outs[1][0]) / 2, atol=1e-6)
    np.testing.assert_allclose(e, np.hstack([outs[0][1], outs[1][1]]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="input size"):
        combine_au_onnx([members[0], _shipped_au()], tmp_path / "bad.onnx")   # 32 px smoke vs 64 px
    with pytest.raises(ValueError, match="at least two"):
        combine_au_onnx(members[:1], tmp_path / "one.onnx")


def _shipped_au():
    from pathlib import Path

    import smile2pay

    return Path(smile2pay.__file__).parent / "models" / "weights" / "au_mobile.onnx"


def test_cli_ensemble_of(smoke, tmp_path):
    """`smile2pay train-au --ensemble-of A B --export OUT --json`: a file and its sha256; bad input -> exit 2."""
    import hashlib
    import subprocess
    import sys

    out0, _ = smoke
    member = str(out0 / "au_mobile.onnx")

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "train-au", *args, "--json"],
                           capture_output=True, text=True, timeout=300)
        return p.returncode, json.loads(p.stdout)

    code, d = cli("--ensemble-of", member, member, "--export", str(tmp_path / "e.onnx"))
    assert code == 0 and d["members"] == 2
    assert d["sha256"] == hashlib.sha256((tmp_path / "e.onnx").read_bytes()).hexdigest()
    code, d = cli("--ensemble-of", member, str(_shipped_au()), "--export", str(tmp_path / "bad.onnx"))
    assert code == 2 and d["error"]["code"] == "MODEL_LOAD_FAILED"
    code, d = cli("--ensemble-of", member, member)
    assert code == 2 and d["error"]["code"] == "REQUEST_INVALID"


def test_cli_distill_and_width_are_checked(tmp_path):
    """`--distill-weight` outside [0, 1] and an absurd `--width`: exit 2 with a JSON REQUEST_INVALID, before any
    data is read or a folder written."""
    import subprocess
    import sys

    for args in (["--distill-weight", "1.5"], ["--distill-weight", "-0.1"], ["--width", "0"]):
        p = subprocess.run([sys.executable, "-m", "smile2pay.cli", "train-au", "--out", str(tmp_path / "o"), *args,
                            "--json"], capture_output=True, text=True, timeout=120)
        d = json.loads(p.stdout)
        assert p.returncode == 2 and d["error"]["code"] == "REQUEST_INVALID", (args, p.stdout)
        assert args[0] in d["error"]["message"]
    assert not (tmp_path / "o").exists()
