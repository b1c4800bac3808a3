"""lotlens_result_store."""
