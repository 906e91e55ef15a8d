"""Training code for the AU network (needs the ``train`` extra: torch, onnx, onnxscript).

Never imported by the runtime. Entry point: ``smile2pay train-au`` (see :mod:`smile2pay.cli.au`).
"""
