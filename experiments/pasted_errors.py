"""Write tests/fixtures/pasted_errors.json from a catalogue run: for every case whose symptom declares an
exception or a warning, the exception and warnings its trigger really raised (the text a user would paste).

    benchsuite run --json /tmp/catalogue.json
    python experiments/pasted_errors.py /tmp/catalogue.json

Entries of cases the run did not reproduce are kept from the existing file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pasted_errors.json"


def main(run_json: str) -> int:
    run = json.loads(Path(run_json).read_text())
    known = json.loads(OUT.read_text()) if OUT.exists() else {}
    for r in run["results"]:
        trig = (r.get("evidence") or {}).get("trigger") or {}
        if r.get("status") != "reproduced" or not (trig.get("exception") or trig.get("warnings")):
            continue
        known[r["id"]] = {"exception": trig.get("exception"), "warnings": trig.get("warnings", [])[:5]}
    OUT.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    print(f"wrote {OUT} ({len(known)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
