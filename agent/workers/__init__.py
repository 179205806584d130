"""Model workers: a backend in its own process (and Python env), spoken to over a websocket."""
