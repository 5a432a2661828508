"""What ingest and worker share: settings, the signature scheme, the alert model, transport helpers."""
