"""Driver-side state machines: DAG planning, group placement, map outputs, results."""
