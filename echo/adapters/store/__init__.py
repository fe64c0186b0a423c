"""Store adapters: ``SqliteStore`` (durable, the default), ``PostgresStore``, ``MemoryStore`` (tests and
``memory://``), the SQL they share (``statements``, ``reads``) and the migration runner that applies the
numbered files in ``sql/``."""
