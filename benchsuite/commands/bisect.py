"""`benchsuite bisect`: find the release of a package where a case's status changes."""
from __future__ import annotations

from ..harness import bisect as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("bisect", help="find the release of a package where a case's status changes")
    p.add_argument("id", metavar="ID", help="the case to bisect")
    p.add_argument("--package", required=True, help="the package whose releases are bisected (e.g. transformers)")
    p.add_argument("--from", dest="from_", default=None, metavar="VERSION", help="oldest release to consider")
    p.add_argument("--to", default=None, metavar="VERSION", help="newest release to consider")
    _options.pins(p, help="extra requirements for every probe (another package than --package)")
    _options.cases_dir(p)
    _options.json_output(p)
    _options.timeout(p, per="probe")
    p.add_argument("--write", action="store_true",
                   help="when the probes contradict the case's declared range for --package, write the suggested "
                        "range into the case file and print the diff")
    _options.ray(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(cases_dir=_options.resolve_cases_dir(args.cases_dir), case_id=args.id, package=args.package,
                       from_=args.from_, to=args.to, with_=args.with_, json_path=args.json, timeout=args.timeout,
                       ray=args.ray, ray_workers=args.ray_workers, write=args.write)
