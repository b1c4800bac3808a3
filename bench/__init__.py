"""`python -m bench` / `make bench`: LotLens against floors measured side by side (see README.md)."""
