"""Audio-LLM backends beyond the embedded cascade, one module each, and their shared parts."""
