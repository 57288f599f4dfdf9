"""The doctor: probes of every outside part the engine needs (database, resolver, transports, webhook app)."""
