"""Delivery lifecycles, sans-IO, each a table: ``transition(state, input, now, settings) -> (state,
effects)``. ``machine.py``: a command, Core to slave; ``relay.py``: the Agent's hop; ``intent.py``: a master
intent; ``effects.py``: the shared settings and effects."""
