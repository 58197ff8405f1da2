"""The outside check: prove from the network that a PostgreSQL server is TLS-only."""
