"""lotlens_gateway."""
