"""The case harness: discovery, isolated execution, verdicts, reports and pinned environments."""
