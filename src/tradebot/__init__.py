"""tradebot: resilient, plugin-based crypto trading bots."""

__version__ = "0.1.0"
