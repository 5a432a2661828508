"""worker: consumes verified alerts and turns them into order state, a transition log and events."""
