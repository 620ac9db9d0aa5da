"""Platform adapters: translate platform events into engine requests and post replies."""
