"""Before/after of the scan's Python-side cost (docs/results/host-cost.md).

    mkdir -p /tmp/oldgs/bsold && git archive a7badbf benchsuite/gradscan | tar x -C /tmp/oldgs/bsold --strip-components=1
    touch /tmp/oldgs/bsold/__init__.py
    python docs/results/host-cost-before-after.py /tmp/oldgs 300 > docs/results/host-cost.json

Times benchsuite.scanbench.host_cost() on the old gradscan package (imported as bsold.gradscan, with
today's benchsuite._core: the CPU scan entry point did not change) and on this tree's, in one process.
"""
import importlib
import json
import sys

sys.path.insert(0, sys.argv[1])
from benchsuite import scanbench  # noqa: E402

reps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
old = importlib.import_module("bsold.gradscan._scan")
new = importlib.import_module("benchsuite.gradscan._scan")
print(json.dumps({"kind": "host-cost", "device": "cpu",
                  "before": scanbench.host_cost(reps=reps, scan_module=old),
                  "after": scanbench.host_cost(reps=reps, scan_module=new)}, indent=1))
