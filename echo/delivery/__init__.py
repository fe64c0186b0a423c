"""The delivery state machine, sans-IO: ``transition(state, input, now, settings) -> (state, effects)``."""
