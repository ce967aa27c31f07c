"""JSON by orjson: responses written, and the database's JSON columns read.

Responses are the same JSON as Flask's, several times faster to write.

A chart's answer holds thousands of numbers (`monitor/history.py`): writing them took Python's
encoder about a tenth of the request (bench/history.py's charts, profiled). Keys are sorted
as Flask sorts them, and what orjson does not take as Flask does (times, dataclasses,
Decimal) goes through Flask's own `default`. Whatever orjson refuses (an integer past 64
bits, a lone surrogate in a string) is written by Flask's encoder instead, as before. Debug
mode keeps Flask's indented output.

The JSON columns are read by orjson (`loads`, the engine's deserializer): a round of 10,000
sources reads each one's day of sparkline points (`SourceState.retained_history`). They are
still written by Python's `json`: the audit export relays the text a column keeps, which is
json.dumps's (`audit/export.py`).
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME  # Flask writes times as HTTP dates, through `default`
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_APPEND_NEWLINE
)


class FastJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, its responses written by orjson (see the module)."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        # The app's response class takes bytes (its type here is werkzeug's base class).
        response: Response = cast(Any, self._app.response_class)(body, mimetype=self.mimetype)
        return response


def loads(text: str) -> Any:
    """Read a JSON column's value (the engine's deserializer). An integer past 64 bits would
    read as a float; no column holds one (they hold byte counts, times and names)."""
    return orjson.loads(text)
