"""Store adapters: ``SqliteStore`` (durable, the default), ``MemoryStore`` (tests and ``memory://``) and the
migration runner that applies the numbered files in ``sql/``."""
