"""The first hour of a new user (issue "The first hour"), the parts that need no weights or images: help that
explains itself (every command, option and default) and usage errors that say what to do.

The CLI runs as a user runs it (a subprocess).
"""
from __future__ import annotations

import argparse
import json

import pytest

from helpers import run


# ---------------------------------------------------------------------------------------- help
MAIN = ("demo", "analyze", "compare", "enroll", "verify", "identify", "serve")


def test_top_level_help_lists_every_command_with_a_summary():
    from smile2pay.cli import COMMANDS

    code, out, _ = run("--help")
    assert code == 0
    lines = out.splitlines()
    for name in COMMANDS:
        line = next((ln for ln in lines if ln.strip().startswith(name + " ")), None)
        assert line is not None, f"{name} has no one-line summary in smile2pay --help:\n{out}"
        assert len(line.split(None, 1)[1]) > 15, line
    assert "compare" in out and "same person" in out
    assert "first steps:" in out and "smile2pay demo" in out


@pytest.mark.parametrize("cmd", MAIN)
def test_main_commands_have_examples(cmd):
    code, out, _ = run(cmd, "--help")
    assert code == 0
    assert "example" in out and f"smile2pay {cmd}" in out.split("example", 1)[1], out


@pytest.mark.parametrize("cmd,expected", [
    ("serve", ["--host", "(default: 127.0.0.1)", "--port", "(default: 8080)", "--policy", "calibration file"]),
    ("identify", ["-k K", "(default: 5)", "--folder", "--report", "(default: error)"]),
    ("enroll", ["--mode", "(default: new)", "--threads", "SMILE2PAY_THREADS, else 1"]),
    ("verify", ["--far", "(default: 0.0001)", "--require", "(default: AU6+AU12)"]),
    ("compare", ["--pick", "(default: largest)", "--far"]),
])
def test_option_help_shows_defaults(cmd, expected):
    code, out, _ = run(cmd, "--help")
    assert code == 0
    flat = " ".join(out.split())
    for e in expected:
        assert e in flat, f"{e!r} missing from `smile2pay {cmd} --help`:\n{out}"


def _parsers(parser, name="smile2pay"):
    yield name, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for n, sp in a.choices.items():
                yield from _parsers(sp, f"{name} {n}")


def test_every_option_has_help_and_models_only_where_models_load():
    from smile2pay.cli import build_parser

    missing, models_on = [], set()
    for name, p in _parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            if a.help is argparse.SUPPRESS:
                continue
            if not a.help:
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
            if "--models" in a.option_strings:
                models_on.add(name)
    assert missing == [], missing
    for name in ("gallery", "remove", "replay", "gallery-rotate-key", "bench gallery"):
        assert f"smile2pay {name}" not in models_on, name
    for name in ("analyze", "compare", "enroll", "verify", "identify", "serve", "demo", "models"):
        assert f"smile2pay {name}" in models_on, name


def test_bench_help_is_plain_text_and_whole():
    code, out, _ = run("bench", "--help")
    assert code == 0
    assert "``" not in out and ":func:" not in out
    flat = " ".join(out.split())
    # the side-sedi summary used to stop at "SEDI (same expression,"
    assert "SEDI (same expression, different identity) cosine distributions" in flat
    code, out, _ = run("bench", "pairs", "--help")
    assert code == 0 and "``" not in out


# ---------------------------------------------------------------------------------------- usage errors
def test_json_usage_error_keeps_argparse_message():
    code, out, err = run("compare", "only-one.jpg", "--json")
    assert code == 2
    e = json.loads(out)["error"]          # stdout is exactly one JSON object
    assert e["code"] == "USAGE"
    assert e["message"] == "the following arguments are required: image_b"
    assert "smile2pay compare --help" in e["hint"]
    assert "image_b" in err               # argparse's usage still on stderr
    code, out, _ = run("identify", "--gallery", "g", "x.jpg", "-k", "many", "--json")
    assert code == 2 and "invalid int value: 'many'" in json.loads(out)["error"]["message"]
    code, out, _ = run("no-such-command", "--json")
    assert code == 2 and "invalid choice: 'no-such-command'" in json.loads(out)["error"]["message"]


def test_usage_error_without_json_is_text_on_stderr():
    code, out, err = run("compare", "only-one.jpg")
    assert code == 2 and out == ""
    assert "the following arguments are required: image_b" in err and "usage: smile2pay compare" in err
