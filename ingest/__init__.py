"""ingest: the HTTP endpoint that verifies HighHelp alerts and hands them to the broker."""
