"""`benchsuite list`: the case catalogue (or a folder of cases), as text, JSON or the catalogue page."""
from __future__ import annotations

from pathlib import Path

from .. import strictjson
from ..common import check_output, envelope, write_atomic
from ..harness import catalogue_doc
from ..harness.discover import case_files, load_case, select
from . import _options


def register(sub) -> None:
    p = sub.add_parser("list", help="show the case catalogue")
    _options.cases_dir(p)
    _options.selection(p)
    _options.json_output(p, optional_path=True,
                         help="the catalogue as JSON, to PATH or (no PATH, or -) to stdout")
    _options.markdown_output(p, help="write the catalogue page (docs/catalogue.md)")
    p.add_argument("--matrix", default=None, metavar="JSON", help="with --markdown: a matrix result to include")
    p.set_defaults(func=run)


def run(args) -> int:
    return main(_options.resolve_cases_dir(args.cases_dir), keyword=args.keyword, tags=args.tag,
                json_path=args.json, markdown_path=args.markdown, matrix=args.matrix)


def main(cases_dir: Path, keyword: str | None = None, tags: list[str] | None = None, json_path: str | None = None,
         markdown_path: str | None = None, matrix: str | None = None) -> int:
    check_output(json_path, "--json")
    check_output(markdown_path, "--markdown")
    rows, broken = [], 0
    for path in select(list(case_files(cases_dir).values()), keyword, tags):
        try:
            rows.append(load_case(path).metadata())
        except Exception as exc:
            broken += 1
            rows.append({"id": path.stem, "broken": f"{type(exc).__name__}: {exc}"})
    if json_path:
        doc = envelope("list", {"cases_dir": str(cases_dir), "cases": rows})
        write_atomic(json_path, strictjson.dumps(doc, indent=2))
        return 1 if broken else 0
    if markdown_path:
        catalogue_doc.write([r for r in rows if "broken" not in r], markdown_path, matrix)
        print(f"wrote {markdown_path}")
    for r in rows:
        if "broken" in r:
            print(f"{r['id']}\n    BROKEN CASE FILE: {r['broken']}")
            continue
        affected = ", ".join(f"{k}{v}" for k, v in r["affected"].items()) or "all versions"
        tag_text = f"; tags: {', '.join(r['tags'])}" if r.get("tags") else ""
        family = f"; family: {r['family']}" if r.get("family") else ""
        print(f"{r['id']}\n    {r['title']}\n    affected: {affected}; refs: {', '.join(r['references'])}; "
              f"fixes: {len(r['fixes'])}{family}{tag_text}")
    print(f"\n{len(rows)} case(s) in {cases_dir}" + (f", {broken} broken" if broken else ""))
    return 1 if broken else 0
