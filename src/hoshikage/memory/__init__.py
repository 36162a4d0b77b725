"""Long-term memory: remembered turns and facts, searched by meaning and by keyword."""
