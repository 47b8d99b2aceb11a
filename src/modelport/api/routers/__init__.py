"""The routers of the HTTP API under /api/v1."""
