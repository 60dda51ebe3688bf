"""Exchange plugins (Kraken, paper) and the Kraken-compatible simulator."""
