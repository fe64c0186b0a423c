"""Ports: the interfaces services call and adapters implement (typing.Protocol)."""
