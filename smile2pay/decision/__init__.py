"""Payment decision: AU rules, calibrated policy, expression-change liveness, guard (lockout, nonce, audit)."""
