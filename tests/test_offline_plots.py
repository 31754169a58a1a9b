"""The offline plots template: `dvc plots show` / `dvc plots diff` pages render with the network blocked.

The browser tests open the pages in headless Chromium with DNS and the proxy pointed at nothing; a page
made with DVC's default template (Vega from a CDN) must then show no chart, which proves the blocking.
"""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from dvc_render.vega import OPTIONAL_ANCHOR_RANGES
from PIL import Image

from helpers import ROOT
from ladeda.core.errors import run_cli
from ladeda.tools import offline_plots

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 2400)
# DVC colours lines by revision with this palette: the first colour is the first revision's
PALETTE = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in OPTIONAL_ANCHOR_RANGES["color"]]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Script sources, and for every element id the chart surfaces (Vega's `marks` svg/canvas) inside it."""

    def __init__(self, text: str):
        super().__init__()
        self.scripts: list[str | None] = []  # src of each <script>, None when inline
        self.marks: dict[str, list[dict]] = {}  # id of an enclosing element -> attrs of the marks inside
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs.get("src"))
        if tag in ("svg", "canvas") and "marks" in (attrs.get("class") or "").split():
            for _, element_id in self._open:
                if element_id:
                    self.marks.setdefault(element_id, []).append(attrs)
        if tag not in VOID:
            self._open.append((tag, attrs.get("id")))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):  # close the nearest open `tag` (and anything left open in it)
            if self._open[i][0] == tag:
                del self._open[i:]
                break


def vega_plots(index_html: str) -> dict[str, dict]:
    """The Vega plots of a DVC page: div id -> spec (DVC writes `var spec = <json>; vegaEmbed('#<id>', spec);`)."""
    plots, decoder = {}, json.JSONDecoder()
    for start in re.finditer(r"var spec = ", index_html):
        spec, end = decoder.raw_decode(index_html, start.end())
        call = re.match(r";\s*vegaEmbed\('#([^']+)', spec\)", index_html[end:])
        assert call, f"unexpected DVC plot div near {index_html[start.start():start.start() + 80]!r}"
        plots[call.group(1)] = spec
    return plots


def has_data(spec) -> bool:
    """Whether a Vega-Lite spec holds any data row (DVC writes an empty one for a plot whose files are missing)."""
    if isinstance(spec, dict):
        return bool(spec.get("values")) or any(has_data(v) for v in spec.values())
    return isinstance(spec, list) and any(has_data(v) for v in spec)


def remote_scripts(scripts: list[str | None]) -> list[str]:
    return [src for src in scripts if src and re.match(r"(?i)\s*(https?:)?//", src)]


def dvc_plots(tmp_path: Path, *args: str) -> Path:
    """Run `dvc plots <args> -o <tmp>/out` in the project root (the committed plots/ data); return index.html."""
    out = tmp_path / "out"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", "plots", *args, "-o", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    index = out / "index.html"
    assert index.is_file(), done.stdout + done.stderr
    return index


def offline_browser(index: Path, tmp_path: Path) -> tuple[str, np.ndarray]:
    """Open `index` in headless Chromium with every network name and the proxy unreachable; return the DOM
    after rendering and a screenshot (RGB array)."""
    shot = tmp_path / "screenshot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost", "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=15000", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
        "--dump-dom", index.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-3000:]
    return done.stdout, np.asarray(Image.open(shot).convert("RGB")).astype(int)


def palette_pixels(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 24) -> int:
    """How many pixels are within `tolerance` (per channel) of a DVC line colour."""
    return int((np.abs(image - np.array(colour)).max(axis=2) <= tolerance).sum())


def assert_charts_drawn(index: Path, dom: str) -> list[str]:
    """Every Vega plot of the page that has data is drawn in its div, and no script came from the network."""
    text = index.read_text(encoding="utf-8")
    plots = vega_plots(text)
    assert len(plots) == text.count("vegaEmbed("), "a Vega plot div was not parsed"
    expected = sorted(i for i, spec in plots.items() if has_data(spec))
    assert expected, f"no Vega plot of the page has data (plots: {sorted(plots)}); is plots/ empty?"
    page = Page(dom)
    drawn = sorted(i for i in plots if any(float(m.get("width") or 0) > 0 and float(m.get("height") or 0) > 0
                                           for m in page.marks.get(i, [])))
    assert drawn == expected, f"plots with data: {expected}; drawn: {drawn}"
    assert remote_scripts(Page(text).scripts) == []
    assert remote_scripts(page.scripts) == []
    return expected


@pytest.fixture(scope="module")
def template_text() -> str:
    return offline_plots.render_template()


@pytest.fixture
def chromium():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    return CHROMIUM


@pytest.fixture(scope="module")
def configured_template() -> Path:
    """The template `.dvc/config` names, resolved as DVC does (relative to .dvc/); made by `make install`."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        value = repo.config["plots"].get("html_template")
        path = Path(repo.dvc_dir, value) if value else None
    assert path is not None, ".dvc/config has no [plots] html_template"
    assert path.is_file(), f"{path} is missing: run `make install` (or python -m ladeda.tools.offline_plots)"
    return path


# --- the template, without a browser -------------------------------------------------------------------


def test_template_has_the_placeholder_and_only_inline_scripts(template_text):
    from dvc_render.html import HTML

    assert template_text.count("{plot_divs}") == 1
    assert "{scripts}" not in template_text  # dvc_render would put the CDN <script src> tags there
    scripts = Page(template_text).scripts
    assert scripts == [None]  # one inline script, no src at all
    assert not re.search(r"<script[^>]*\bsrc\s*=", template_text, re.IGNORECASE)
    assert len(re.findall(r"</script", template_text, re.IGNORECASE)) == 1  # the bundle does not end it early
    assert "window.vegaEmbed=" in template_text.replace(" ", "")
    filled = HTML(template_text).with_element('<div id="x">X</div>').embed()  # dvc_render accepts and fills it
    assert '<div id="x">X</div>' in filled and "{plot_divs}" not in filled


def test_write_template_is_atomic_and_matches_render(tmp_path, template_text):
    target = tmp_path / "new" / "offline.html"
    assert offline_plots.write_template(target) == target
    assert target.read_text(encoding="utf-8") == template_text
    assert list(target.parent.glob(".*.tmp")) == []


def test_cli_unwritable_path_is_one_error_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    done = subprocess.run([sys.executable, "-m", "ladeda.tools.offline_plots", str(blocker / "t.html")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and not (blocker / "t.html").exists()


def test_cli_read_only_folder_is_one_error_line(read_only_folder, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["offline_plots", str(read_only_folder / "t.html")])
    with pytest.raises(SystemExit) as exit_:
        run_cli(offline_plots.main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and "not writable" in err and err.count("\n") == 1
    assert list(read_only_folder.iterdir()) == []


def test_dvc_config_names_the_generated_git_ignored_file(configured_template):
    assert configured_template.resolve() == (ROOT / offline_plots.DEFAULT_PATH).resolve()
    rel = configured_template.resolve().relative_to(ROOT.resolve())
    assert subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=ROOT).returncode == 0, f"{rel} not ignored"
    assert "{plot_divs}" in configured_template.read_text(encoding="utf-8")


def test_no_stage_or_other_subpackage_imports_tools():
    """ladeda.tools is a developer tool: importing it from a stage would make dvc.yaml depend on it."""
    import ast

    files = [*(ROOT / "stages").glob("*.py"), *(f for f in (ROOT / "src" / "ladeda").rglob("*.py")
                                               if "tools" not in f.relative_to(ROOT / "src" / "ladeda").parts[:1])]
    assert len(files) > 10
    users = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "ladeda.tools" or n.startswith("ladeda.tools.") for n in names):
                users.append(str(f.relative_to(ROOT)))
    assert users == []


# --- the pages, in a browser without network -----------------------------------------------------------


def test_plots_show_renders_offline(chromium, configured_template, tmp_path):
    index = dvc_plots(tmp_path, "show")  # the html_template from .dvc/config
    dom, image = offline_browser(index, tmp_path)
    assert_charts_drawn(index, dom)
    assert palette_pixels(image, PALETTE[0]) >= 500, "no chart lines in the screenshot"
    non_white = image.min(axis=2) < 235
    assert non_white.mean() > 0.02
    assert len(np.unique(image[non_white] // 32, axis=0)) >= 5  # several distinct colours, not one flat fill


def test_default_template_shows_nothing_offline(chromium, tmp_path):
    """Negative control: DVC's own template loads Vega from a CDN, so with the network blocked no chart draws."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "dvc_default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    index = dvc_plots(tmp_path, "show", "--html-template", str(default))
    text = index.read_text(encoding="utf-8")
    assert vega_plots(text) and remote_scripts(Page(text).scripts), "expected DVC's CDN <script src> tags"
    dom, image = offline_browser(index, tmp_path)
    assert Page(dom).marks == {}
    assert palette_pixels(image, PALETTE[0]) < 50


def test_plots_diff_renders_offline(chromium, configured_template, tmp_path):
    index = dvc_plots(tmp_path, "diff", "HEAD")
    text = index.read_text(encoding="utf-8")
    assert '"rev": "HEAD"' in text and '"rev": "workspace"' in text
    dom, image = offline_browser(index, tmp_path)
    assert_charts_drawn(index, dom)
    # lines in the second revision's colour (drawn over the first's where the data agree): two revisions drawn
    assert palette_pixels(image, PALETTE[1]) >= 500, "no lines in the second revision's colour"
