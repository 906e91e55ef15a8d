"""The ``smile2pay`` command line: one module per group of commands.

``main`` (the parser, dispatch, ``--json``, exit codes 0/1/2, typed errors, install hints) is in
:mod:`smile2pay.cli.main`; commands register themselves with :func:`command` from ``gallery``, ``verify``,
``stream``, ``au``, ``bench``, ``calibrate_au``, ``calibrate_continuity`` and ``calibrate_pad`` (the deployment's
own AU, capture-continuity and presentation-attack calibrations). Benchmarks, dataset
loaders and training live in the separate ``smile2pay-tools`` distribution (``tools/``), imported only by the
commands that need it.
"""
from .main import (COMMANDS, DETECTOR_HELP, MODELS_HELP, OPTIONAL_PACKAGES, THREADS_HELP, add_runtime_args,
                   build_parser, command, extra_missing, install_hints, main, require, settings_from)

__all__ = ["COMMANDS", "DETECTOR_HELP", "MODELS_HELP", "OPTIONAL_PACKAGES", "THREADS_HELP", "add_runtime_args",
           "build_parser", "command", "extra_missing", "install_hints", "main", "require", "settings_from"]
