"""streambridge's web tier: ``ext`` is the Flask extension a host app embeds (sockets,
catch-up, the queue listener, the browser client); ``app`` is the standalone product
built on it (users file, login, the page, ``POST /api/``, security)."""
