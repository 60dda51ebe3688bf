"""Built-in notifiers: ``log`` (default), ``telegram`` and ``webhook``.

Each module is a plugin of its own (entry points ``tradebot.plugins.notifiers.<name>``)
registering one :class:`tradebot.services.notify.Notifier`. What is sent and when is decided
by :class:`tradebot.services.notify.NotificationDispatcher`; a notifier only delivers.
"""
