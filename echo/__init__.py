"""Echo: a MetaTrader trade copier."""

__version__ = "0.1.0"
