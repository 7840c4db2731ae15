"""Terminal rendering of search results (rich), shared by ``shoprank search`` and ``shoprank demo``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from schemas import SearchResult

__all__ = ["print_result"]


def print_result(out: Console, r: SearchResult) -> None:
    search_id = (r.search_id or "-")[:8]  # an error answer has none
    table = Table(title=f"“{r.query}” — {r.timings_ms.get('total', 0):.0f} ms, search_id {search_id}…",
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("product")
    table.add_column("price", justify="right")
    table.add_column("dense", justify="right")
    table.add_column("bm25", justify="right")
    for item in r.items:
        price = f"{item.price:,.2f} {item.currency or ''}" if item.price is not None else "-"
        table.add_row(str(item.rank + 1), item.title or item.product_id, price,
                      f"{item.scores.get('dense', 0):.3f}", f"{item.scores.get('bm25', 0):.2f}")
    out.print(table)
    for name, counts in r.facets.items():
        top = ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:6])
        out.print(f"  [dim]{name}:[/] {top}")
