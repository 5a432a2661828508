"""What ingest and worker share: settings, signatures, the alert model, transport helpers."""
