"""The REST API (FastAPI): outcomes in, predictions and metrics out."""
