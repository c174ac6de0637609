"""Log what comes from outside at most once a minute per source and reason.

Input from outside (an MQTT command, an HTTP client, a device's bytes, a passing advertiser) can
arrive thousands of times a second; a log line per refusal would turn an attack into a full disk.
`LogThrottle.log` writes the first line for a key, then stays quiet for `interval` seconds and
says how many it kept quiet when it next speaks. The keys remembered are bounded (oldest
forgotten first), so spoofed sources cannot grow memory either.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from gateway.limits import LOG_THROTTLE_INTERVAL, LOG_THROTTLE_KEYS


class LogThrottle:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = LOG_THROTTLE_INTERVAL,
        max_keys: int = LOG_THROTTLE_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        # key -> (time of the last line written, lines kept quiet since)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def log(self, key: Hashable, level: int, msg: str, *args: object, **kwargs: object) -> bool:
        """Log `msg % args` unless a line with this key was written within the interval.
        Returns True when it was written."""
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            msg = f"{msg} ({last[1]} more like it in the last {now - last[0]:.0f}s)"
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        self._logger.log(level, msg, *args, **kwargs)  # type: ignore[arg-type]
        return True

    def warning(self, key: Hashable, msg: str, *args: object, **kwargs: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args, **kwargs)

    def info(self, key: Hashable, msg: str, *args: object, **kwargs: object) -> bool:
        return self.log(key, logging.INFO, msg, *args, **kwargs)

    def error(self, key: Hashable, msg: str, *args: object, **kwargs: object) -> bool:
        return self.log(key, logging.ERROR, msg, *args, **kwargs)
