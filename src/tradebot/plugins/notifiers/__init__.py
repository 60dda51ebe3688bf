"""Built-in notifiers: ``log`` (default), ``telegram`` and ``webhook``.

Each module is a plugin of its own (entry points ``tradebot.plugins.notifiers.<name>``)
registering one :class:`tradebot.core.notify.Notifier`. What is sent and when is decided
by :class:`tradebot.core.notify.NotificationDispatcher`; a notifier only delivers.
"""
