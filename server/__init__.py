"""Top floor: the app factory and the command line. Nothing imports it."""
