"""The executor: local scheduler state machine, block store, task runner and actor shell."""
