"""Load generator comparing django-durable-streams with the Node reference server (issue 6)."""
