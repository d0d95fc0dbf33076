"""The standalone app's Jinja templates (data files; installed as ``streambridge.templates``)."""
