"""Alembic migrations of the storage schema (applied by ``gateway.storage.engine.upgrade``)."""
