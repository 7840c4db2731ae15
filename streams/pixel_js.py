"""The JavaScript pixel served by the gateway, with its comments and indentation stripped.

The source (streams/static/pixel.js) keeps the comments for readers; browsers get it without them.
The stripping is line-based and safe because the source keeps every comment on a line of its own.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources

__all__ = ["pixel_etag", "pixel_minified", "pixel_source"]

_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def pixel_source() -> str:
    return resources.files("streams").joinpath("static/pixel.js").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def pixel_minified() -> bytes:
    text = _BLOCK_COMMENT.sub("", pixel_source())
    lines = (line.strip() for line in text.splitlines())
    return ("\n".join(line for line in lines if line and not line.startswith("//")) + "\n").encode()


@lru_cache(maxsize=1)
def pixel_etag() -> str:
    return '"' + hashlib.sha256(pixel_minified()).hexdigest()[:16] + '"'
