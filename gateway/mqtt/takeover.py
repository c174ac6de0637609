"""Is another process using our client id? Judged from how the connections end.

A broker allows one connection per client id: when a second process connects with ours, the
broker closes the older connection; that one reconnects and kicks the other, and so on. Both
gateways keep working, badly (every kick costs a reconnect and repeats what was in flight),
and nothing says why. Two signs tell it apart from an ordinary outage:

- MQTT 5: the broker's DISCONNECT carries reason code 0x8E, *session taken over*: certain.
- MQTT 3.1.1: the socket is simply closed, but each connection dies soon after it came up,
  again and again. `TAKEOVER_LOSSES` losses in a row, each within `reset_after` (the backoff's
  own notion of a healthy link) of its connect, is the pattern. A broker that refuses a
  connection, or an ack timeout, is something else and does not count; a connection that stays
  up `reset_after` ends the streak.

Pure: the session reports each loss, the detector answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.limits import TAKEOVER_LOSSES

SESSION_TAKEN_OVER = 0x8E  # MQTT 5 reason code


class Verdict(Enum):
    ORDINARY = "ordinary"  # an outage like any other
    SUSPECT = "suspect"  # one short-lived loss: part of a pattern, maybe
    TAKEOVER = "takeover"  # the broker said so, or the pattern is complete


@dataclass(slots=True)
class TakeoverDetector:
    reset_after: float  # a connection up this long was healthy
    losses: int = TAKEOVER_LOSSES
    streak: int = 0
    detected: bool = False  # ever, in this process: the loud log line is written once

    def lost(self, up_for: float, kind: str, reason_code: int | None) -> Verdict:
        """A connection that had been up `up_for` seconds ended with an error of `kind` (the
        translated error's metric label) and, if the broker sent one, a DISCONNECT reason."""
        if reason_code == SESSION_TAKEN_OVER:
            self.streak = max(self.streak, self.losses)
            return Verdict.TAKEOVER
        if kind != "mqtt" or up_for >= self.reset_after:
            self.streak = 0
            return Verdict.ORDINARY
        self.streak += 1
        return Verdict.TAKEOVER if self.streak >= self.losses else Verdict.SUSPECT
