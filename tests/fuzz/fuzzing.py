"""Shared bounds of the fuzz suite (`tests/fuzz/`): hypothesis tests of everything that parses
input from outside (framers, decoders, the BLE parser adapter, the command parser, the YAML
loader, the config models).

Every test is bounded: `GATEWAY_FUZZ_EXAMPLES` examples each (200 by default, what CI runs; set
it higher for a longer hunt), no per-example deadline (CI's machine is shared), and derandomized
unless `GATEWAY_FUZZ_RANDOM` is set, so a CI failure is reproducible. What the tests assert:
only the gateway's own errors come out, and memory stays bounded.

    @FUZZ
    @given(st.binary(max_size=512))
    def test_kv_never_raises_a_foreign_error(data: bytes) -> None: ...
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "200"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("GATEWAY_FUZZ_RANDOM") is None,
)

#: For targets whose every example is costly (a whole YAML config parsed and validated: ~0.1 s
#: each on CI's machine): a quarter of the examples, so the suite stays within CI's budget.
FUZZ_HEAVY = settings(parent=FUZZ, max_examples=max(EXAMPLES // 4, 10))
