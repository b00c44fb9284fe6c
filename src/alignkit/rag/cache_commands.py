"""``alignkit cache stats|clear --cache DIR``: look at or empty a semantic cache. The options schema (pydantic only
at import) and the entry point; registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed


class CacheOptions(Closed):
    """``alignkit cache ACTION --cache DIR``."""

    action: Annotated[Literal["stats", "clear"], Opt(positional=True)] = Field(
        description="stats: print counts as JSON; clear: remove every entry"
    )
    cache: Annotated[str, Opt(metavar="DIR")] = Field(description="the cache directory, or its postgresql:// URL")


def cache(opts: CacheOptions) -> int:
    import json

    from alignkit.rag.cache import SemanticCache

    store = SemanticCache(opts.cache, create=False)  # no model is loaded: neither action embeds
    try:
        if opts.action == "stats":
            print(json.dumps(store.stats().as_dict(), indent=2))
        else:
            n = store.clear()
            print(f"cleared {n} entries from {store.path}")
    finally:
        store.close()
    return 0
