"""``alignkit cache stats|clear --cache DIR``: look at or empty a semantic cache (argparse only at import)."""

from __future__ import annotations

import argparse


def cmd_cache(args: argparse.Namespace) -> int:
    import json

    from alignkit.rag.cache import SemanticCache

    cache = SemanticCache(args.cache, create=False)  # no model is loaded: neither action embeds
    try:
        if args.action == "stats":
            print(json.dumps(cache.stats().as_dict(), indent=2))
        else:
            n = cache.clear()
            print(f"cleared {n} entries from {cache.path}")
    finally:
        cache.close()
    return 0


def add_parsers(sub) -> None:
    """Register ``alignkit cache`` on the ``alignkit`` parser's subparsers ``sub``."""
    c = sub.add_parser("cache", help="semantic cache tools: stats (JSON) or clear")
    c.add_argument("action", choices=["stats", "clear"], help="stats: print counts as JSON; clear: remove every entry")
    c.add_argument("--cache", required=True, metavar="DIR", help="the cache directory, or its postgresql:// URL")
    c.set_defaults(func=cmd_cache)
