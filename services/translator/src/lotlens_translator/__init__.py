"""lotlens_translator."""
