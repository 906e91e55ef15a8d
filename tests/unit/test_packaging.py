"""Installable by default: the wheel carries every file the package reads at run time, and a command
whose optional extra is not installed is a typed error (exit 2, EXTRA_MISSING), not a traceback.

(.ci/run goes further: it installs the wheel into a fresh venv and runs ``smile2pay demo`` and
``smile2pay verify`` from outside the source tree.)
"""
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Build the wheel the way .ci/run does (``pip wheel --no-deps``) from a copy of the sources, so
    that the build/ and egg-info folders it writes never land in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "smile2pay", src / "smile2pay", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    (whl,) = (tmp / "dist").glob("smile2pay-*.whl")
    with zipfile.ZipFile(whl) as z:
        yield z


def test_wheel_ships_runtime_data(wheel):
    names = set(wheel.namelist())
    for required in ("smile2pay/decision/calibration/mobile.json",   # verify(): CALIBRATION_MISSING without it
                     "smile2pay/models/weights/au_mobile.onnx",       # the project's AU model
                     "smile2pay/server/static/kiosk.html",             # serve: the kiosk page
                     "smile2pay/server/static/kiosk.js",
                     "smile2pay/server/static/kiosk.css",
                     "smile2pay/py.typed"):
        assert required in names, f"{required} is not in the wheel"
    # and every other data file of the package (a new one must be added to package_data in setup.cfg)
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "smile2pay").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
            and not p.name.startswith(".")]
    assert sorted(set(data) - names) == []
    cal = json.loads(wheel.read("smile2pay/decision/calibration/mobile.json"))
    assert cal  # the file the default policy reads parses


def test_wheel_metadata_extras(wheel):
    meta = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("onnxruntime-gpu") and 'extra == "gpu"' in r for r in reqs), reqs
    # training is tooling (smile2pay-tools): the runtime wheel asks for no torch, under any extra
    assert not [r for r in reqs if r.startswith(("torch", "onnxscript"))], reqs


def test_tooling_is_not_in_the_wheel(wheel):
    """Benchmarks, dataset loaders, training and the test PostgreSQL cluster ship in smile2pay-tools
    (tools/), not in the runtime wheel; the runtime package never imports them at module level."""
    names = wheel.namelist()
    tooling = [n for n in names if n.startswith(("smile2pay/bench/", "smile2pay/train/", "smile2pay_tools/"))
               or n in ("smile2pay/datasets.py", "smile2pay/datasets_id.py", "smile2pay/perf.py",
                        "smile2pay/gallery/pg_cluster.py")]
    assert tooling == [], tooling
    assert "smile2pay/cli/main.py" in names and "smile2pay/cli/__main__.py" in names
    import ast
    for n in names:
        if n.endswith(".py"):
            tree = ast.parse(wheel.read(n).decode())
            top = [x for x in tree.body if isinstance(x, (ast.Import, ast.ImportFrom))]
            mods = [a.name for x in top if isinstance(x, ast.Import) for a in x.names] + \
                   [x.module or "" for x in top if isinstance(x, ast.ImportFrom)]
            assert not [m for m in mods if m.startswith("smile2pay_tools")], n


def test_tools_distribution_declares_torch_as_a_range():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tools" / "setup.cfg")
    (torch,) = [r.strip() for r in cfg["options.extras_require"]["train"].splitlines() if r.strip().startswith("torch")]
    assert "==" not in torch and "<" in torch, torch   # a range, not a pin: an installed (CPU) torch satisfies it
    try:
        from importlib.metadata import version

        from packaging.requirements import Requirement
        installed = version("torch")
    except Exception:  # no torch or no packaging here: the range itself was checked above
        return
    assert Requirement(torch).specifier.contains(installed, prereleases=True), (torch, installed)


# ------------------------------------------------------------------------------- missing extras
#: a meta-path finder that makes the given top-level packages look uninstalled (ModuleNotFoundError,
#: as after ``pip uninstall``), then runs the CLI's main() in this interpreter
RUNNER = textwrap.dedent("""
    import sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    for m in list(sys.modules):
        if m.split(".")[0] in BLOCKED:
            del sys.modules[m]
    import smile2pay.cli as cli
    if sys.argv[2].startswith("x-imports-"):   # a command that imports a module deep inside its run()
        @cli.command(sys.argv[2], lambda p: None)
        def _x(args):
            import importlib
            importlib.import_module(sys.argv[2][len("x-imports-"):])
    sys.exit(cli.main(sys.argv[2:]))
""")


def run_without(blocked, *argv):
    p = subprocess.run([sys.executable, "-c", RUNNER, ",".join(blocked), *argv], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("blocked,argv,extra", [
    (["fastapi", "uvicorn"], ["serve", "--gallery", "{tmp}/g"], "server"),
    (["torch"], ["train-au", "--smoke", "--out", "{tmp}/au"], "train"),
    (["matplotlib"], ["replay", "{tmp}/rec.json", "--png", "{tmp}/t.png"], "viz"),
    (["torch"], ["bench", "smile-to-pay"], "train"),
    (["psycopg"], ["verify", "--gallery", "postgresql://u@127.0.0.1:1/db", "alice", "{tmp}/a.jpg"], "postgres"),
    (["websockets"], ["x-imports-websockets"], "server"),
    (["smile2pay_tools"], ["bench", "pairs"], "tools"),
    (["smile2pay_tools"], ["calibrate", "--dataset", "lfw", "--out", "{tmp}/c.json"], "tools"),
], ids=["serve", "train-au", "replay", "bench-smile-to-pay", "postgres-gallery", "deep-import", "bench-no-tools",
        "calibrate-no-tools"])
def test_missing_extra_is_typed_exit_2(tmp_path, blocked, argv, extra):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run_without(blocked, *argv, "--json")
    assert code == 2, out + err
    assert "Traceback" not in err, err
    e = json.loads(out)["error"]   # stdout is exactly one JSON object
    assert e["code"] == "EXTRA_MISSING"
    assert e["details"]["extra"] == extra and e["details"]["module"] in blocked
    from smile2pay.cli import install_hints

    local, wheel_hint = install_hints(extra)
    assert local in e["message"] and wheel_hint in e["message"]
    assert (f"pip install '.[{extra}]'" in e["message"]) == (extra not in ("train", "tools"))
    assert "smile2pay[" not in e["message"]   # not on any index: never the bare package name


def test_missing_extra_without_json(tmp_path):
    code, out, err = run_without(["fastapi", "uvicorn"], "serve", "--gallery", str(tmp_path / "g"))
    assert code == 2 and "Traceback" not in err
    assert "EXTRA_MISSING" in err and "pip install '.[server]'" in err


def test_other_missing_module_is_not_hidden():
    """Only optional packages become EXTRA_MISSING; any other missing module is a bug and surfaces as one."""
    code, out, err = run_without([], "x-imports-smile2pay_no_such_module", "--json")
    assert code == 1 and "EXTRA_MISSING" not in out
    assert "ModuleNotFoundError" in err and "smile2pay_no_such_module" in err
