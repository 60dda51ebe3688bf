"""Built-in monitor checks and HALT triggers, one module each."""
