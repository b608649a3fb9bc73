"""`python -m llm_jepa.corpora`: list the registry, or rebuild datasets from upstream.

    python -m llm_jepa.corpora list
    python -m llm_jepa.corpora prepare NAME [NAME...]|all --out DIR [--spider_out DIR]
    python -m llm_jepa.corpora prepare spider_data --out spider_data/

`spider_data` is the Spider SQLite databases; they are also fetched with `spider` when
`--spider_out` is given. See datasets/README.md for the sources and the preprocessing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import progress_logging
from . import DATASETS
from .prepare import RECIPES, SPIDER_DATA, SPIDER_ZIP_URL, PrepareError, one_line, prepare_dataset, \
    prepare_spider_data, resolve_names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llm_jepa.corpora", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the dataset registry and each dataset's upstream source")
    prep = sub.add_parser("prepare", help="download the upstream data and write <name>_{train,test}.jsonl")
    prep.add_argument("names", nargs="+", metavar="NAME", help=f"dataset names, 'all' or '{SPIDER_DATA}'")
    prep.add_argument("--out", type=Path, required=True,
                      help="folder for the JSONL files (for spider_data alone: for the databases)")
    prep.add_argument("--spider_out", type=Path, default=None,
                      help="folder for the Spider databases (database/<db_id>/<db_id>.sqlite, tables.json)")
    prep.add_argument("--spider_url", default=SPIDER_ZIP_URL,
                      help="URL or local path of the Spider release zip (spider_data.zip)")
    prep.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def print_registry() -> None:
    for name, info in DATASETS.items():
        files = "train+test" if info.has_test else "train"
        views = ", text/code views" if info.view_fields else ""
        print(f"{name:16s} {files:10s} metric={info.metric}{views}")
        print(f"{'':16s} system: {info.system_prompt}")
        if name in RECIPES:
            print(f"{'':16s} source: {RECIPES[name].source}")
    print(f"{SPIDER_DATA:16s} databases  source: the Spider 1.0 release zip (--spider_url)")


def prepare(args: argparse.Namespace) -> None:
    names = resolve_names(args.names)
    for name in names:
        if name != SPIDER_DATA:
            prepare_dataset(name, args.out)
    if SPIDER_DATA in names:
        prepare_spider_data(args.spider_out or args.out, args.spider_url)
    elif args.spider_out is not None and "spider" in names:
        prepare_spider_data(args.spider_out, args.spider_url)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress_logging()
    if args.command == "list":
        print_registry()
        return 0
    try:
        prepare(args)
    except PrepareError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug or an unforeseen upstream change: still one line
        if args.debug:
            raise
        print(f"error: {one_line(err)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
