"""The Agent's ack ledger adapters: in memory (tests, the simulation) and in an SQLite file of its own."""
