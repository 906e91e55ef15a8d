"""Cross-population protocol of the smile gate: see smile2pay/bench/au_population.py.

    python benchmarks/au_cross_population.py --run results/au3 [--onnx FILE] [--write-calibration FILE]
"""

from smile2pay_tools.bench.au_population import main

if __name__ == "__main__":
    main()
