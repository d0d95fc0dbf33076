"""Key-values carried by every record of a logger, as stdlib ``extra``.

Library modules log with ``logging.getLogger(__name__)`` and put key-values in
``extra``; ``logging_setup`` renders them as the line's keys. A logger adapter is how a
component binds its own (a bridge's consumer and stream) to all its lines.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class Bound(logging.LoggerAdapter):
    """A logger whose records all carry ``extra`` plus the call's own ``extra`` (the
    call's keys win). Python 3.11's LoggerAdapter would drop the call's instead.

    Keys must not be LogRecord attributes (``name``, ``msg``, ``args``, ``module``,
    ``process``, ``thread``, ``message``, ...): ``logging`` refuses those with KeyError.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
