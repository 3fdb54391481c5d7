"""Write a report: self-contained HTML, Markdown, figures as PNG and SVG, tables as CSV."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pandas as pd

from harness.errors import VecbenchError
from harness.video import record_video
from reports.collect import collect
from reports.figures import close
from reports.sections import Section, build_sections

ANIMATION_FRAMES = 100  # per configuration's clip (4 s at 25 frames/s, one env)

# Marks the page once every figure has loaded (tests read it from the DOM).
_LOAD_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img.figure'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures-loaded', ok + '/' + imgs.length);
  document.body.setAttribute('data-page-width', document.documentElement.scrollWidth);
});
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; overflow-wrap: anywhere; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
</style>"""


def write_report(
    inputs: list[Path],
    out: Path,
    storage: str | None = None,
    studies: list[str] | None = None,
    threshold: float | None = None,
    reps: int = 2000,
    title: str = "vecbench report",
) -> Path:
    """Collect, build and write the report into ``out``; returns the HTML file's path."""
    collection = collect(inputs, storage, studies)
    sections = build_sections(collection, threshold, reps)
    for folder, patterns in (("figures", ("*.png", "*.svg", "*.gif")), ("tables", ("*.csv",))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for pattern in patterns:  # an earlier report's files would read as this one's
            for stale in (out / folder).glob(pattern):
                stale.unlink()
    html_parts = [f"<h1>{html.escape(title)}</h1>"]
    md_parts = [f"# {title}\n"]
    for section in sections:
        h, m = _render_section(section, out)
        html_parts.append(h)
        md_parts.append(m)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{_STYLE}</head><body>"
        + "\n".join(html_parts)
        + _LOAD_CHECK
        + "</body></html>"
    )
    (out / "report.html").write_text(page)
    (out / "report.md").write_text("\n".join(md_parts))
    manifest = {
        "title": title,
        "inputs": [str(p) for p in inputs],
        "problems": collection.problems,
        "repaired": collection.repaired,
        "duplicate_seeds": collection.duplicate_seeds,
        "sections": [s.title for s in sections],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out / "report.html"


def _render_section(section: Section, out: Path) -> tuple[str, str]:
    h = [f"<h2>{html.escape(section.title)}</h2>"]
    m = [f"## {section.title}\n"]
    for para in section.text:
        h.append(f"<p>{html.escape(para)}</p>")
        m.append(para + "\n")
    for name, caption, fig in section.figures:
        slug = _slug(name)
        fig.savefig(out / "figures" / f"{slug}.png", dpi=110)
        fig.savefig(out / "figures" / f"{slug}.svg")
        close(fig)
        data = base64.b64encode((out / "figures" / f"{slug}.svg").read_bytes()).decode()
        h.append(
            f"<figure><img class='figure' alt='{html.escape(caption)}' "
            f"src='data:image/svg+xml;base64,{data}'><figcaption>{html.escape(caption)}"
            "</figcaption></figure>"
        )
        m.append(f"![{caption}](figures/{slug}.png)\n")
    for name, caption, run_dir in section.animations:
        path = out / "figures" / f"{_slug(name)}.gif"
        try:
            record_video(run_dir, path, envs=1, steps=ANIMATION_FRAMES, device="cpu")
        except (VecbenchError, OSError, RuntimeError) as err:  # e.g. no OpenGL for MuJoCo
            h.append(f"<p>{html.escape(caption)}: no animation ({html.escape(str(err))})</p>")
            m.append(f"{caption}: no animation ({err})\n")
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        h.append(
            f"<figure><img class='figure' alt='{html.escape(caption)}' "
            f"src='data:image/gif;base64,{data}'><figcaption>{html.escape(caption)}"
            "</figcaption></figure>"
        )
        m.append(f"![{caption}](figures/{path.name})\n")
    for name, caption, table in section.tables:
        slug = _slug(name)
        table.to_csv(out / "tables" / f"{slug}.csv", index=False)
        shown = _display(table)
        h.append(f"<p><b>{html.escape(caption)}</b> (<a href='tables/{slug}.csv'>CSV</a>)</p>")
        h.append(shown.to_html(index=False, na_rep=MISSING, border=0))
        m.append(f"**{caption}** ([CSV](tables/{slug}.csv))\n")
        m.append(shown.to_markdown(index=False))
        m.append("")
    return "\n".join(h), "\n".join(m)


MISSING = "-"


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers rounded to 4 significant digits for reading, missing values as "-"; the CSV
    keeps them whole."""
    shown = table.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: MISSING if pd.isna(v) else f"{v:.4g}")
        else:
            shown[col] = shown[col].astype(object).where(shown[col].notna(), MISSING)
    return shown


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
