"""Example flows and the Python they call."""
