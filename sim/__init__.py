"""A deterministic simulator of the worker: the real worker code (consumer handlers, processor,
poller, batching, maintenance, retention) run against in-memory ports with the local server's
weak semantics, several replicas, crashes and faults at any await of a port, and virtual
time, each schedule chosen by a seeded random generator and judged by invariants
(design.md, "Proof by simulation")."""
