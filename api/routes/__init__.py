"""REST v1 routers, one module per resource; ``api.app`` mounts them under /api/v1."""
