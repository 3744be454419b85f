"""One module per subcommand: each has ``register(subparsers)``, which declares its parser and options, and
``run(args)``, which unpacks the arguments once and calls the engine with keywords. Options several
commands share are declared once, in ``_options``. ``benchsuite/cli.py`` assembles them in this order."""
from __future__ import annotations

from . import (
    bench,
    bisect,
    cache,
    compare,
    compare_grads,
    doctor,
    export,
    info,
    matrix,
    refresh,
    run,
    scan_bench,
    selftest,
    site,
    watch,
)
from . import list as list_

MODULES = (info, selftest, list_, run, matrix, bisect, bench, watch, doctor, scan_bench, compare, compare_grads,
           cache, export, refresh, site)
