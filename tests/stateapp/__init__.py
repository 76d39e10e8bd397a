"""A test-only app whose models stream their changes (durable_streams.state)."""
