"""Authentication (who is asking) and authorization (may they do it)."""
