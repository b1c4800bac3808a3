"""lotlens_webhook_dispatcher."""
