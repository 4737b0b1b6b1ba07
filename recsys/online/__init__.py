"""The online store: Feast's Redis layout (every name, encoder and decoder), the Feast repo, the
writers of the nightly lists, the fast reader behind ``recsys lookup`` and HTTP, read-back checks and
the publication record.

May import ``recsys.ops`` (Redis server, locks), ``recsys.runtime`` and the top-level modules. The
reader imports neither torch nor Feast.
"""
