"""The HTML pages the suite writes (a run's report, a comparison of runs): one look, no scripts,
nothing fetched from the network, so a page opens from a cluster's file system or an archive."""

from __future__ import annotations

import html
from typing import Iterable

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; } td, th { padding: .3em .7em; border-bottom: 1px solid #e4e4e4; }
th { text-align: left; background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.lead { font-size: 1.15em; } .muted { color: #666; } code { background: #f3f3f3; padding: 0 .2em; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; } figcaption { color: #555; font-size: .9em; }
img, video { max-width: 100%; border: 1px solid #ddd; } pre { background: #f7f7f7; padding: .8em; overflow-x: auto; }
"""


def page(title: str, body: Iterable[str]) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def table(header: list[str], rows: Iterable[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table of already-escaped cells; the columns in `numeric` are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
