"""Old home of the notifiers' HTTP helper; it is public now: import it from :mod:`tradebot.api`."""

from tradebot.api import HttpPoster, check_url

__all__ = ["HttpPoster", "check_url"]
