"""lotlens_vision_batcher."""
