"""Source kinds: one module per kind, and the registry that maps a kind's name to it."""
