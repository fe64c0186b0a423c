"""Simulated MetaTrader terminals: a shared market, brokers that differ, and master/slave EAs.

The terminals are peers of the copier: they speak the EA wire protocol (``echo.pipe.codec``) over a trio
stream exactly like the MQL4 EAs do, and never call copier internals. They report their broker's symbol
specs and execute what they are told; sizing and symbol mapping stay in the copier.
"""
