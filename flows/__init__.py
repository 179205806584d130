"""YAML conversation flows: schema, loader, engine, examples."""
