"""lotlens_openai_standin."""
