"""streambridge: durable real-time push for Flask apps.

Kept import-light on purpose: the web entry point must monkey-patch eventlet
before anything imports sockets, and it imports this package first.
"""

__version__ = "0.1.0"
