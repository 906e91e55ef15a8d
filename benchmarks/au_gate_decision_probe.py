"""Can the decision layer alone lift the smile gate on LFW pairs? (issue 14; probed, not adopted)
See smile2pay_tools/bench/au_gate_probe.py.

    python benchmarks/au_gate_decision_probe.py [--run results/au3] [--max-fpr 0.02]
"""
from smile2pay_tools.bench.au_gate_probe import main

if __name__ == "__main__":
    main()
