"""Built-in plugins: providers (one per cloud) and the shared host-setup steps."""
