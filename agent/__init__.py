"""The pipeline around the audio-LLM slot, its backends, and turn-taking."""
