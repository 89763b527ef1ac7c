"""The shared harness of the benchmarks: what every benchmark needs and none of them measures.

* ``stats``: percentiles of one run and the median/min/max/spread of a figure over repeats;
* ``processes``: helper processes (start, talk JSON lines to, read CPU and RSS of, stop), the
  event loop choice, bulk results between processes;
* ``machine``: what the figures were measured on;
* ``report``: a benchmark's output (spread lines, one JSON object) and the report's rows and
  cells (value, floor, ratio, variance);
* ``hub``, ``phones``, ``servers``, ``wire``, ``probes``: the helper processes the gateway
  benchmarks share (hub and sim, phones, fan-out servers and publishers, the raw WebSocket and
  MQTT clients, what is recorded inside a helper); ``joins`` and ``sessions``: joining sends
  with reads, and the orchestrator's API calls;
* ``radio``: the one place that names the product's radio pieces the helpers build on;
  ``services`` and ``disk``: ``mcgw sim``/``mcgw serve`` as real processes, and the small disk
  the soak fills.

Importing it puts the repository root on ``sys.path`` (the benchmarks run as scripts). It does
not measure anything and imports no benchmark; bench/'s imports have no cycle
(tests/test_bench_smoke.py checks both).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
