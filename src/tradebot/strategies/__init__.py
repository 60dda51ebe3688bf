"""Built-in strategy plugins, one module each."""
