"""What training and evaluation share: dataset sources, the face cache and the framing of cached faces."""
