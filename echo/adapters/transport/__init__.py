"""Transports between Core and Agents."""
