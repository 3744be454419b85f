"""One module per subcommand (the shape every command moves to): each has ``register(subparsers)``, which
declares its parser and options, and ``run(args)``, which unpacks the arguments once and calls the engine
with keywords. Options several commands share are declared once, in ``_options``. ``benchsuite/cli.py``
assembles them."""
from __future__ import annotations

from . import export, refresh, site

MODULES = (export, refresh, site)
