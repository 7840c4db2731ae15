"""Sample catalogues for the demo, benchmarks and simulations.

* :func:`sample_catalogue` - the demo's catalogue: DummyJSON's 194 real products (MIT licence, bundled in
  ``data/dummyjson/`` with its licence and provenance), converted by :mod:`streams.samples.dummyjson`.
* :func:`load_catalogue_file` - catalogue JSON lines (the ``CatalogueUpdate`` contract, tenant optional).
* :func:`generate_catalogue` - any number of synthetic products, deterministic for a seed, with ground-truth
  intent labels (:func:`product_topics`, :func:`is_relevant`) for search simulations. See
  :mod:`streams.samples.generator`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from schemas.base import validate
from schemas.catalogue import CatalogueUpdate
from schemas.exceptions import DecodeError
from streams.exceptions import UserInputError
from streams.samples.dummyjson import convert
from streams.samples.generator import TAXONOMY, TOPIC_KINDS, generate_catalogue, is_relevant, product_topics

__all__ = [
    "DUMMYJSON_PRODUCTS",
    "SAMPLE_SIZE",
    "load_catalogue_file",
    "TAXONOMY",
    "TOPIC_KINDS",
    "generate_catalogue",
    "is_relevant",
    "product_topics",
    "sample_catalogue",
]

#: DummyJSON's ``database/products.json`` as published upstream (see ``data/dummyjson/NOTICE.md``).
DUMMYJSON_PRODUCTS = Path(__file__).parent / "data" / "dummyjson" / "products.json"

#: Products in the bundled catalogue.
SAMPLE_SIZE = 194


def sample_catalogue(tenant: str = "demo") -> list[CatalogueUpdate]:
    """The bundled real catalogue (DummyJSON, MIT) as upserts for ``tenant``, in product id order."""
    try:
        raw = orjson.loads(DUMMYJSON_PRODUCTS.read_bytes())
    except FileNotFoundError:
        raise UserInputError(f"{DUMMYJSON_PRODUCTS} is missing: reinstall shoprank "
                             "(pip install -e .) or pass --catalogue FILE") from None
    return [validate(CatalogueUpdate, {**orjson.loads(line), "tenant": tenant})
            for line in convert(raw).splitlines()]


def load_catalogue_file(path: Path, tenant: str = "demo") -> list[CatalogueUpdate]:
    """Catalogue JSON lines (optionally gzipped) as upserts for ``tenant``; raises ``DecodeError`` with the line."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    records: list[CatalogueUpdate] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise DecodeError("not_an_object", "expected a JSON object")
            records.append(validate(CatalogueUpdate, {**obj, "tenant": tenant}))
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_json", f"{path}:{n}: {exc}") from None
        except DecodeError as err:
            raise DecodeError(err.reason, f"{path}:{n}: {err.detail}") from None
    return records
