"""LotLens Python SDK."""
