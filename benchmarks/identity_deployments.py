"""Simulated deployments (LFW, CK+, FER+ and mixtures; 10 / 100 / 1,000 users): the identity threshold's
FAR and genuine accepts with the shipped global threshold, with the gallery's self-calibration, and with
the population's own labelled threshold, same claims, same run. See smile2pay/bench/deployments.py.

    python benchmarks/identity_deployments.py [--write-calibration smile2pay/decision/calibration/mobile.json]
"""

from smile2pay_tools.bench.deployments import main

if __name__ == "__main__":
    main()
