"""HTTP service (FastAPI): see app.py."""
