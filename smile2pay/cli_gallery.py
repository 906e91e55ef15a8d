"""Gallery commands (enroll, enroll-batch, identify, remove): registered with ``cli.command``."""
