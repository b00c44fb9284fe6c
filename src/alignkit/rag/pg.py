"""The server store's shared part: PostgreSQL with pgvector, selected by a ``postgresql://`` URL.

Both the semantic cache (:mod:`alignkit.rag.cache_pg`) and the RAG corpus index (:mod:`alignkit.rag.store_pg`)
keep rows and their vectors in one table (a pgvector ``vector`` column), so a row and its vector are written in
one transaction and there is nothing to reconcile; the nearest-neighbour search is SQL (``ORDER BY embedding <=>
query``, an HNSW index with cosine distance). The drivers, psycopg 3 and the ``pgvector`` package, are imported
only when a URL is opened (``pip install 'alignkit[postgres]'``); the database needs the ``vector`` extension
(``CREATE EXTENSION vector``, done by the store when its role may, else once by an administrator).

Several stores may share one database: each keeps its tables under its own prefix (the URL's ``prefix`` query
parameter, default ``alignkit_``), e.g. ``postgresql://app@db:5432/prod?prefix=faq_cache_``. Other query
parameters are passed to libpq.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alignkit.rag.errors import RagError

DEFAULT_PREFIX = "alignkit_"
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def is_postgres_url(path: object) -> bool:
    """Whether ``path`` (a str or path) names the server store: ``postgresql://`` or ``postgres://``."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password (for messages, logs and stats)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> tuple[str, str]:
    """``(libpq URL, table prefix)``: the ``prefix`` query parameter taken out (a RagError when it is not a plain
    lower-case SQL name of at most 40 characters)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    if not _PREFIX.fullmatch(prefix):
        raise RagError(f"{redact(url)}: prefix must be lower-case letters, digits and _ (at most 40), got {prefix!r}")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def drivers():
    """``(psycopg, pgvector.psycopg)``, or a one-line :class:`~alignkit.errors.MissingExtra` naming the missing
    package and the extra that installs both (``alignkit[postgres]``)."""
    from alignkit.errors import require

    return require("psycopg", "a postgresql:// store"), require("pgvector.psycopg", "a postgresql:// store")


def connect(url: str):
    """An autocommit psycopg connection to ``url`` with the ``vector`` type registered (the extension created when
    missing and the role may); one-line RagErrors for an unreachable server or a missing extension."""
    psycopg, pgv = drivers()
    libpq_url, _ = split_url(url)
    try:
        conn = psycopg.connect(libpq_url, autocommit=True, connect_timeout=int(os.environ.get("PGCONNECT_TIMEOUT", "10")))
    except psycopg.Error as err:
        raise RagError(f"{redact(url)}: cannot connect ({_first_line(err)})") from err
    try:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as err:
                if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None:
                    pass  # another connection created it at the same moment
                else:
                    raise RagError(
                        f"{redact(url)}: the database lacks the pgvector extension and this role cannot create it "
                        f"({_first_line(err)}); run 'CREATE EXTENSION vector' as an administrator"
                    ) from err
        pgv.register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
