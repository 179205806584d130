"""WebRTC: browser calls over aiortc, their signalling and the call page."""
