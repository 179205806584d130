"""callwright: phone agents on streaming audio LLMs. This package wires the parts together."""
