"""Configuration sources."""
