"""Services around the engine: the HTTP health/control server, metrics, the notification
dispatcher, the control channel, trading history and logging."""
