"""The bridge daemon: stream -> consumer group -> Socket.IO message queue."""
