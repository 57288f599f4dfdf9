"""Templates: choice per contact, sandboxed rendering, MIME building, unsubscribe tokens."""
