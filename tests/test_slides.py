"""The reveal.js decks (``make slides``, :mod:`lora_lab.course.slides`) as files: everything they load is local, every
figure has its alt text, skipped cells are gone. ``tests/browser/test_deck_in_browser.py`` opens one in Chromium."""
import re

import pytest

from lora_lab.course import slides


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    try:
        slides.build(out, names=["01_low_rank"])
    except SystemExit as e:  # the slides extra is not installed
        pytest.skip(str(e))
    return out


def test_deck_loads_nothing_from_another_host(deck):
    html = (deck / "01_low_rank.slides.html").read_text()
    loads = re.findall(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
    assert loads and not [u for u in loads if re.match(r"(https?:)?//", u)], loads
    assert "@import url(http" not in html
    for local in ("reveal.js/dist/reveal.js", "reveal.js/dist/reveal.css", "reveal.js/dist/theme/white.css",
                  "reveal.js/plugin/notes/notes.js", "mathjax/tex-chtml-full.js"):
        assert local in loads and (deck / local).is_file(), local
    assert (deck / "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
    theme = (deck / "reveal.js/dist/theme/white.css").read_text()
    assert not re.search(r"@import url\((https?:)?//", theme)


def test_deck_has_slides_alt_text_and_no_skipped_cells(deck):
    html = (deck / "01_low_rank.slides.html").read_text()
    assert html.count("<section") >= 15
    imgs = re.findall(r"<img\b[^>]*>", html)
    assert len(imgs) >= 6 and all(re.search(r'alt="[^"]{40,}"', i) for i in imgs), "a figure without alt text"
    assert "google.colab" not in html, "the Colab install cell is skipped"
    assert "fig, ax = plt.subplots()" not in html, "a plotting cell tagged slides-hide-input shows its code"
    assert "colab-badge.svg" not in html


def test_links_to_other_notebooks_lead_somewhere_from_a_deck():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [the solutions](solutions.ipynb#Notebook-8) and [lesson 2](02_lora_layer.ipynb).")])
    text = slides.notebook_links(nb, {"02_lora_layer"}).cells[0].source
    assert "](02_lora_layer.slides.html)" in text
    assert "](https://github.com/lora-lab/lora-lab/blob/main/notebooks/solutions.ipynb#Notebook-8)" in text
    assert ".ipynb)" not in text.replace("solutions.ipynb#", "")


def test_notebook_url_names_the_repository_in_pyproject():
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    repo = re.search(r'^Repository = "([^"]+)"', pyproject, re.M).group(1)
    assert slides.NOTEBOOK_URL.startswith(repo + "/blob/main/notebooks/")
