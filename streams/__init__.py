"""The Faust app, its agents, the HTTP views and the ``shoprank`` CLI.

Kept light on purpose: ``import streams`` must not pull in Faust, so the CLI starts fast.
"""

from streams.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
