"""`lotlens-admin`: every operator tool for LotLens behind one command."""
