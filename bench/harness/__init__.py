"""The shared harness of the benchmarks: what every benchmark needs and none of them measures.

* ``stats``: percentiles of one run and the median/min/max/spread of a figure over repeats;
* ``processes``: helper processes (start, talk JSON lines to, read CPU and RSS of, stop), the
  event loop choice, bulk results between processes;
* ``machine``: what the figures were measured on;
* ``report``: a benchmark's output (spread lines, one JSON object) and the report's rows and
  cells (value, floor, ratio, variance);
* ``hub``, ``phones``, ``wire``: the helper processes the gateway benchmarks share (the hub and
  sim processes, the phones, the raw WebSocket and MQTT clients);
* ``product``: the one place that names the product's modules the helpers start.

Importing it puts the repository root on ``sys.path`` (the benchmarks run as scripts). It does
not measure anything, and it never imports a benchmark module: benchmarks import the harness,
never one another (tests/test_bench_smoke.py checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
