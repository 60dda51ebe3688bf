"""Built-in HALT position policies: ``maintain``, ``close`` and ``reduce``."""
