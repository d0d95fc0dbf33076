"""The producer side: ``streambridge publish`` (``cli``) and examples in other languages
(``examples/``). Python code publishes with ``from streambridge import publish``."""
