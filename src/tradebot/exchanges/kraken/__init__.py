"""The Kraken spot exchange plugin: REST, WebSocket v2, auth, errors, rate limits."""
