"""Pure domain: identifiers, quantities, symbol specs, messages, error codes.

Stdlib only: no I/O, no clock reads."""
