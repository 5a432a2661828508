"""hh-sandbox: plays HighHelp offline — the API (signed requests, /info) and signed alerts with
duplicates, reordering and drops — so merchants and our tests can exercise the whole flow."""
