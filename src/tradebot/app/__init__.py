"""The application: settings, the Bot that assembles the engine, the plugins and the services,
pre-flight checks and ``--auto-restart``."""
