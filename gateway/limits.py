"""Every timeout and bound that is not a config setting, in one place, each with its reason.

What an operator may want to tune is a config default (`gateway/config/`, documented in the
field descriptions and `gateway schema`). What is here is fixed by the protocol, the hardware or
a judgement about safety; moving a value between the two is a design decision, not a tweak.
Outbox internals keep their own (`gateway/outbox/`), with the outbox.
"""

from __future__ import annotations

# -- lifecycle -----------------------------------------------------------------------------
CLOSE_RESERVE = 2.0  # seconds of the shutdown budget kept for closing the MQTT session
FORCED_EXIT_GRACE = 3.0  # after a second signal, exit hard if unwinding takes longer
