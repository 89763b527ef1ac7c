"""Alembic revisions, oldest first; each file is one revision."""
