"""Vision stages: detect, align, quality, identity (and AU in later work)."""
