"""The EA wire protocol: bytes <-> messages, sans-IO (see conformance/PROTOCOL.md)."""
