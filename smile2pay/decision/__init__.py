"""Payment decision: AU rules, calibrated policy, expression-change liveness, lockout policy (the guard
stores that apply it live in :mod:`smile2pay.gallery`)."""
