"""Long-wait notifier: after each sample, the queues whose estimated wait crossed their [waits]
threshold are logged, counted and handed to [notify] command / webhook_url, once per queue per
five minutes (the decision is core/waits.py; this is the telling)."""

from __future__ import annotations

import logging
import os
import time

from horizond.core import waits
from horizond.observe.helpers import Helpers
from horizond.observe.metrics import Metrics

log = logging.getLogger("horizond.observe")


class LongWaitNotifier:
    def __init__(self, helpers: Helpers):
        self.helpers = helpers
        self.notified: dict[str, float] = {}  # queue -> when it was last reported (monotonic)

    def check(self, estimated: dict[str, float], pending: dict[str, int], threshold, owner, metrics: Metrics,
              notify_command: tuple[str, ...], webhook_url: str | None, now: float) -> list[str]:
        """Report the queues newly over their threshold; returns their names."""
        crossed, self.notified = waits.crossing(estimated, threshold, now, self.notified)
        for queue, wait, limit in crossed:
            metrics.long_wait(queue)
            event = {"event": "long_wait", "queue": queue, "wait_seconds": round(wait, 1),
                     "threshold_seconds": limit, "pending": pending.get(queue, 0),
                     "supervisor": metrics.supervisor_of[queue] if queue in metrics.supervisor_of else owner(queue),
                     "host": os.uname().nodename, "time": time.time()}
            log.warning("long wait on a queue", extra=dict(event, event="long_wait", message_queue=queue))
            self.helpers.notify(event, notify_command, webhook_url)
        return [q for q, _, _ in crossed]
