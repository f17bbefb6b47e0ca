"""The API reference covers every public name, and the docs build without warnings."""

from __future__ import annotations

import importlib
import inspect
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
# package -> its reference page; privkit.deploy joins when it exists
PAGES = {"privkit": "privkit.md", "privkit.fhe": "fhe.md", "privkit.nn": "nn.md",
         "privkit.dp": "dp.md", "privkit.anon": "anon.md", "privkit.deploy": "deploy.md"}


def _packages():
    return [p for p in PAGES if importlib.util.find_spec(p) is not None]


def _documented(page: Path) -> set[str]:
    """Names a page documents: the last part of each '::: a.b.Name' and each '## `a.b.Name`'."""
    text = page.read_text()
    names = {m.split(".")[-1] for m in re.findall(r"^::: ([\w.]+)", text, re.M)}
    names |= {m.split(".")[-1] for m in re.findall(r"^## `([\w.]+)`", text, re.M)}
    return names


@pytest.mark.parametrize("pkg", _packages())
def test_every_public_name_is_in_the_reference(pkg):
    page = API / PAGES[pkg]
    assert page.is_file(), f"{pkg} has no API page docs/api/{PAGES[pkg]}"
    missing = set(importlib.import_module(pkg).__all__) - _documented(page)
    assert not missing, f"add to docs/api/{PAGES[pkg]}: {sorted(missing)}"


def test_every_api_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in API.glob("*.md"):
        assert f"api/{page.name}" in nav, page.name


@pytest.mark.skipif(importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra is not installed (make docs installs it)")
def test_docs_build_strict_and_list_every_name(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                        "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for pkg in _packages():
        html = (site / "api" / PAGES[pkg].removesuffix(".md") / "index.html").read_text()
        mod = importlib.import_module(pkg)
        for name in mod.__all__:
            if inspect.ismodule(getattr(mod, name)):
                continue  # a subpackage: its own page
            assert re.search(rf'id="[\w.]*\.{re.escape(name)}"', html), f"{pkg}.{name}"
    shutil.rmtree(site, ignore_errors=True)
