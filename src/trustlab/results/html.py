"""Self-contained HTML pages: one implementation of the page, its tables and its figures.

Every HTML file trustlab writes (a run's report, the audit scorecard, the leaderboard site, the
backdoor matrix) is built here, so that they look alike and share one guarantee: **no external
assets**. Styles and the table-sorting script are inline, figures are PNGs embedded as
``data:`` URIs, so a page opens offline, from a mail attachment or a CI artefact, and can be
archived as one file.

Tables marked sortable sort when a header is clicked (numbers as numbers, using each cell's
``data-sort`` value when it has one, so "97.1% [95.0, 98.3]" sorts by 97.1; a second click
reverses; the header's ``aria-sort`` says the order). Text is escaped; only :class:`Raw`
strings are inserted as HTML.

Example:
    >>> body = section("Accuracy", table(["model", "acc"], [["resnet20", 0.971]]))
    >>> html_text = page("My model", body)
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trustlab.utils.io import write_text_atomic


class Raw(str):
    """A string that is already HTML: inserted as it is, never escaped."""


class Cell:
    """A table cell whose displayed text differs from the value it sorts by.

    Args:
        text: what the cell shows (escaped unless it is :class:`Raw`).
        sort: the value the column sorts by (a number sorts numerically), or None.
        cls: an extra CSS class for the cell (e.g. ``"pass"``), or None.
    """

    def __init__(self, text: Any, sort: float | str | None = None, cls: str | None = None):
        self.text = text
        self.sort = sort
        self.cls = cls


def esc(value: Any) -> str:
    """``value`` as HTML text: :class:`Raw` as it is, anything else escaped."""
    if isinstance(value, Raw):
        return str(value)
    return html.escape(str(value), quote=True)


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number for a table: integers as they are, floats to ``digits`` significant places,
    NaN and infinities spelled out; anything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def _cell(value: Any, tag: str = "td") -> str:
    attrs = ""
    if isinstance(value, Cell):
        if value.sort is not None:
            attrs += f' data-sort="{esc(value.sort)}"'
        if value.cls:
            attrs += f' class="{esc(value.cls)}"'
        text = value.text
    else:
        text = value
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs += f' data-sort="{esc(value)}"'
    shown = esc(text) if isinstance(text, str) else esc(fmt_number(text))
    return f"<{tag}{attrs}>{shown}</{tag}>"


def table(
    header: Sequence[Any] | None,
    rows: Iterable[Sequence[Any]],
    *,
    sortable: bool = True,
    caption: str | None = None,
    table_id: str | None = None,
    row_headers: bool = False,
) -> str:
    """An HTML table. Cells are text (escaped), numbers (formatted, sorted numerically),
    :class:`Cell` or :class:`Raw`. ``row_headers`` makes each row's first cell a ``<th>``;
    ``header=None`` leaves out the header row (such a table cannot sort)."""
    cls = ' class="sortable"' if sortable and header is not None else ""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    out = [f"<table{cls}{ident}>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    if header is not None:
        heads = "".join(f"<th>{esc(h)}</th>" for h in header)
        out.append(f"<thead><tr>{heads}</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = [_cell(v, "th" if row_headers and i == 0 else "td") for i, v in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return Raw("".join(out))


def key_values(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values (not sortable)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return table(None, [(k, v) for k, v in pairs], sortable=False, row_headers=True)


def png_data_uri(png: bytes) -> str:
    """A PNG's bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.12, facecolor="white",
        metadata={"Software": None},
    )  # fmt: skip
    return buf.getvalue()


def image(png: bytes | str | os.PathLike[str], alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with an embedded PNG (bytes, or the path of a PNG file) and a caption."""
    if not isinstance(png, bytes):
        png = Path(png).read_bytes()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return Raw(f'<figure><img alt="{esc(alt)}" src="{png_data_uri(png)}">{cap}</figure>')


def figure(fig: Any, alt: str, caption: str | None = None) -> str:
    """A matplotlib figure embedded as a PNG ``<figure>`` (the figure is closed)."""
    return image(figure_png(fig), alt, caption)


def badge(verdict: str) -> str:
    """A coloured PASS / FAIL / INCONCLUSIVE (or any short status) label."""
    kind = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive"}.get(
        str(verdict).upper(), "other"
    )
    return Raw(f'<span class="badge {kind}">{esc(verdict)}</span>')


def section(title: str, *parts: str, section_id: str | None = None, note: str = "") -> str:
    """A titled section; ``note`` is a short line under the title (e.g. the section's budget)."""
    ident = f' id="{esc(section_id)}"' if section_id else ""
    sub = f'<p class="note">{esc(note)}</p>' if note else ""
    return Raw(f"<section{ident}><h2>{esc(title)}</h2>{sub}{''.join(parts)}</section>")


def paragraph(text: str, cls: str | None = None) -> str:
    """A paragraph of escaped text (``cls``: ``"warning"`` for a highlighted warning)."""
    c = f' class="{esc(cls)}"' if cls else ""
    return Raw(f"<p{c}>{esc(text)}</p>")


def nav(links: Sequence[tuple[str, str]]) -> str:
    """A row of links ``(href, label)`` (relative hrefs keep a site self-contained)."""
    items = "".join(f'<a href="{esc(h)}">{esc(label)}</a>' for h, label in links)
    return Raw(f"<nav>{items}</nav>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1200px;padding:1rem 1.5rem;color:#1d2330;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.2rem;border-bottom:1px solid #d8dce5;
padding-bottom:.2rem;margin-top:1.8rem}.subtitle{color:#5a6272;margin:0 0 1rem}
nav{display:flex;gap:1rem;flex-wrap:wrap;margin:.5rem 0 1rem}nav a{color:#1f5fbf}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}caption{text-align:left;
font-weight:600;padding:.2rem 0}th,td{border:1px solid #d8dce5;padding:.25rem .5rem;
text-align:left;vertical-align:top}thead th{background:#f1f3f7}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC"}
td[data-sort]{font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}figure img{max-width:100%}
figcaption{font-size:.85rem;color:#5a6272}.note{color:#5a6272;font-size:.9rem;margin:.2rem 0}
.warning{background:#fff4d6;border-left:4px solid #e0a100;padding:.4rem .6rem}
.badge{border-radius:3px;padding:0 .4rem;font-weight:600;font-size:.85rem}
.badge.pass,td.pass{background:#d7f2dd;color:#135c25}.badge.fail,td.fail{background:#fadbd8;
color:#8a1c12}.badge.inconclusive,td.inconclusive{background:#fff0c2;color:#6b4f00}
.badge.other{background:#e6e9ef}footer{color:#8a91a0;font-size:.8rem;margin-top:2rem}
pre{background:#f6f8fa;padding:.5rem;overflow-x:auto;font-size:.85rem}
"""

SORT_JS = """
(function(){
function key(td){var v=td.getAttribute('data-sort');if(v===null){v=td.textContent.trim();}
var n=parseFloat(v);return (v!==''&&isFinite(n)&&/^[-+]?[0-9.]+(e[-+]?[0-9]+)?$/i.test(v))
?{n:true,v:n}:{n:false,v:v.toLowerCase()};}
function sortBy(table,col,th){var body=table.tBodies[0];var rows=Array.prototype.slice.call(
body.rows);var asc=th.getAttribute('aria-sort')!=='ascending';
rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);var c;
if(x.n&&y.n){c=x.v-y.v;}else if(x.n){c=-1;}else if(y.n){c=1;}else{c=x.v<y.v?-1:(x.v>y.v?1:0);}
return asc?c:-c;});
rows.forEach(function(r){body.appendChild(r);});
Array.prototype.forEach.call(th.parentNode.cells,function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',asc?'ascending':'descending');}
document.querySelectorAll('table.sortable').forEach(function(table){
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
th.addEventListener('click',function(){sortBy(table,i,th);});});});
})();
"""


def page(title: str, *parts: str, subtitle: str = "", footer: str = "") -> str:
    """A complete HTML document: inline styles, the inline sorting script, no external assets."""
    from trustlab.results.store import package_versions

    sub = f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ""
    foot = esc(footer or f"made by trustlab {package_versions()['trustlab']}")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{sub}{''.join(parts)}<footer>{foot}</footer>"
        f"<script>{SORT_JS}</script></body></html>\n"
    )


def write_page(path: str | os.PathLike[str], text: str) -> Path:
    """Write a page atomically (nothing half-written); returns its path."""
    path = Path(path)
    write_text_atomic(path, text)
    return path


__all__ = [
    "CSS",
    "SORT_JS",
    "Cell",
    "Raw",
    "badge",
    "esc",
    "figure",
    "figure_png",
    "fmt_number",
    "image",
    "key_values",
    "nav",
    "page",
    "paragraph",
    "section",
    "table",
    "write_page",
]
