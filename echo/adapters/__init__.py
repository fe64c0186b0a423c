"""Adapters: the concrete implementations of the ports (store, transport, pipe, config)."""
