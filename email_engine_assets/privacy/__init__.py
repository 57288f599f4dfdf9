"""One person: explain where everything about them came from, export it, forget them (issue 8 §5)."""
