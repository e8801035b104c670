"""Typed messages and their codec: the wire format of Drizzle."""
