"""Start and stop the platform's embedded components (registry, Caddy) and track them."""
