"""Twilio: voice webhooks, Media Streams, call control and outbound calls."""
