"""Sphinx configuration of the course website (``make site``).

Sources: site/prepare.py copies site/*.md and the notebooks, never executed, into build/site-src/; this file is
read from site/ (``sphinx-build -c site``). Everything the pages load is served from the site itself: MathJax
comes from the sphinx-mathjax-offline package, and myst-nb's widget scripts (require.js and the widget manager,
from CDNs) are switched off; site/check_site.py fails the build on any script, stylesheet or image from
another host.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_URL = "https://github.com/lora-lab/lora-lab"

project = "LoRA Lab"
author = "the LoRA Lab authors"
copyright = "2026, the LoRA Lab authors"

extensions = [
    "myst_nb",
    "sphinx_design",
    "sphinx_togglebutton",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN
]

exclude_patterns = ["_include", "_build", "**.ipynb_checkpoints", "_site_summary.json"]

# the notebooks are shown with their committed outputs (the offline profile's), never re-executed
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no require.js or widget manager from a CDN: widgets show their saved default state
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "LoRA Lab"
html_static_path = ["_static"]
html_css_files = ["lora-lab.css"]
html_extra_path = [str(HERE.parent / "build" / "site-src-extra")]  # slides, the student download
html_last_updated_fmt = None
html_context = {"default_mode": "light"}
html_theme_options = {
    "repository_url": REPO_URL,
    "repository_branch": "main",
    "path_to_docs": "",  # build/site-src mirrors the repository: notebooks/<nb>.ipynb is the repository's path
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_toc_level": 2,
}

# The references each lesson cites: a lesson page lists every reference whose pattern occurs in its text, in a
# "References used in this lesson" box (site/prepare.py), linking to its entry on the references page.
REFERENCES = {
    "hu2021": {
        "short": "Hu et al. 2021",
        "pattern": r"Hu et al|2106\.09685|LoRA paper",
        "link_text": "arXiv:2106.09685",
        "url": "https://arxiv.org/abs/2106.09685",
    },
    "kalajdzievski2023": {
        "short": "Kalajdzievski 2023 (rsLoRA)",
        "pattern": r"rsLoRA|Kalajdzievski|2312\.03732",
        "link_text": "arXiv:2312.03732",
        "url": "https://arxiv.org/abs/2312.03732",
    },
    "raschka2024": {
        "short": "Raschka, Build a Large Language Model (From Scratch)",
        "pattern": r"Raschka|LLMs-from-scratch|textbook|28c65cd",
        "link_text": "rasbt/LLMs-from-scratch at 28c65cd",
        "url": "https://github.com/rasbt/LLMs-from-scratch/tree/28c65cd",
    },
    "peft": {
        "short": "Hugging Face PEFT",
        "pattern": r"\bPEFT\b",
        "link_text": "PEFT documentation",
        "url": "https://huggingface.co/docs/peft",
    },
    "loralib": {
        "short": "microsoft/LoRA (loralib)",
        "pattern": r"microsoft/LoRA|loralib",
        "link_text": "github.com/microsoft/LoRA",
        "url": "https://github.com/microsoft/LoRA",
    },
    "almeida2011": {
        "short": "Almeida et al. 2011 (SMS Spam Collection)",
        "pattern": r"Almeida|SMS Spam Collection|SMS[- ]spam",
        "link_text": "UCI Machine Learning Repository",
        "url": "https://archive.ics.uci.edu/dataset/228/sms+spam+collection",
    },
    "biderman2024": {
        "short": "Biderman et al. 2024",
        "pattern": r"Biderman",
        "link_text": "arXiv:2405.09673",
        "url": "https://arxiv.org/abs/2405.09673",
    },
}

# References a lesson uses without naming them in its text: the lessons that train on the SMS Spam Collection.
LESSON_REFERENCES = {nb: ["almeida2011"] for nb in ("04_lora_finetuning", "05_full_vs_lora", "06_adapters",
                                                    "07_serving_adapters", "08_rank_and_alpha")}
