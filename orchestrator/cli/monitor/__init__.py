"""The terminal monitor: the status feed, the fleet view, its table and screen."""
