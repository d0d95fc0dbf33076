"""Key-values carried by every record of a logger, as stdlib ``extra``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class Bound(logging.LoggerAdapter):
    """A logger whose records all carry ``extra`` plus the call's own ``extra`` (the
    call's keys win). Python 3.11's LoggerAdapter would drop the call's instead."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
