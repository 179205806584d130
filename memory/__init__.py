"""Long-term memory and call records in SQL (SQLAlchemy 2 async, Alembic migrations)."""
