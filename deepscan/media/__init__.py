"""Media in: read videos and images, find faces, follow them in time (no detector knowledge)."""
