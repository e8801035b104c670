"""Actor shells: the asyncio side of each state machine, hosted by a ``Node``."""
