"""Model-facing code shared by the synchronous and batch paths: prompts, request bodies, parsing."""
