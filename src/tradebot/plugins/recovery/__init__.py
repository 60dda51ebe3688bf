"""Built-in recovery actions: the rungs of the self-healing ladder.

Each module is its own plugin (entry points ``reconnect``, ``dns``, ``resync``,
``restart-component``, ``reload-module``, ``escalate``); the ladder order comes from
``[healing] ladder``. Shared plumbing lives in :mod:`._base`.
"""
