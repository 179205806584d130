"""Transports: Twilio webhooks and Media Streams, and WebRTC. Nothing model-specific."""
