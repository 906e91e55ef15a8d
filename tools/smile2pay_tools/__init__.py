"""smile2pay's developer tooling, shipped apart from the runtime package (``tools/`` in the source folder).

* :mod:`smile2pay_tools.bench`: the benchmarks behind ``smile2pay bench`` / ``smile2pay calibrate`` and
  ``benchmarks/*.py`` (each ``configure(parser)`` + ``run(args) -> dict``);
* :mod:`smile2pay_tools.train`: AU-model training (``smile2pay train-au``; extra ``train`` for torch);
* :mod:`smile2pay_tools.datasets` / :mod:`smile2pay_tools.datasets_id`: CK+, LFW, FER+ and folder/CSV loaders;
* :mod:`smile2pay_tools.perf`: per-stage timing; :mod:`smile2pay_tools.pg_cluster`: a throwaway PostgreSQL
  server for tests and the fleet benchmark.

It imports :mod:`smile2pay` through its public modules; the runtime never imports this package except in the
commands that need it, which report ``EXTRA_MISSING`` (exit 2) when it is not installed.
"""
__version__ = "0.1.0"
