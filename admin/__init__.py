"""hh-admin: the operator's command line (orders, signature diagnosis, dead letters)."""
