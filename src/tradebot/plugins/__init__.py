"""Built-in plugins that are not exchanges, strategies or checks."""
