"""The OpenAI-compatible HTTP server: ``create_app`` in :mod:`alignkit.serve.app`, ``alignkit serve`` in
:mod:`alignkit.serve.commands`. Nothing heavy is imported here (``alignkit --help`` stays instant)."""
