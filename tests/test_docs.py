"""The README stays short, the docs name no path outside the clone, and the generated reference tables
cover every config key and family param (checked without building the site: `make docs` builds it)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LOCAL_PATH = re.compile(r"\.\./shared\b|(?<![\w.:/-])/(?:work|home|root|tmp|mnt)/|file://")


def _hook(name: str):
    """A docs hook module, loaded from its file as MkDocs loads it."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    """Every Markdown page of the site, and every file it includes (the dataset cards)."""
    pages = sorted(DOCS.rglob("*.md"))
    included = {
        ROOT / path
        for page in pages
        for path in re.findall(r'^--8<-- "([^"]+)"', page.read_text(encoding="utf-8"), re.M)
    }
    return pages + sorted(included)


def test_readme_is_short_and_its_lines_are_readable():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move detail into docs/"
    long = [(n, len(line)) for n, line in enumerate(lines, 1) if len(line) > 300]
    assert not long, f"README.md lines over 300 characters (line, length): {long}"


def test_readme_links_resolve_inside_the_clone():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links into the docs"
    for target in targets:
        if target.startswith("https://"):
            continue
        assert not target.startswith(("/", "http:", "file:")), target
        assert (ROOT / target).resolve().is_relative_to(ROOT), target
        assert (ROOT / target).exists(), f"README.md links {target}, which does not exist"


@pytest.mark.parametrize("text", ["see ../shared/LABELS.md", "run /work/main/x.py", "file:///etc/passwd"])
def test_a_local_path_is_caught(text):
    assert LOCAL_PATH.search(text)
    assert _hook("link_check").LOCAL_PATH.pattern == LOCAL_PATH.pattern  # the build checks the same


def test_no_page_names_a_path_outside_the_clone():
    found = [
        f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for page in [ROOT / "README.md", *_pages()]
        for text in [page.read_text(encoding="utf-8")]
        for m in LOCAL_PATH.finditer(text)
    ]
    assert not found, found


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("cli.md", True),
        ("#keys", True),
        ("https://skops.readthedocs.io/", True),
        ("http://example.org/", False),
        ("https://localhost:8000/", False),
        ("https://127.0.0.1/x", False),
        ("https://10.0.0.2/x", False),
        ("/etc/passwd", False),
        ("file:///etc/passwd", False),
    ],
)
def test_link_rule(url, allowed):
    pytest.importorskip("mkdocs")
    assert (_hook("link_check").link_problem(url) is None) == allowed


def test_config_reference_covers_every_key():
    hooks = _hook("reference_tables")
    table = hooks.config_table(hooks._load_meanings())
    assert "| `data.train` |" in table and "| `split.dev_fraction` | number | `0.2` | > 0, ≤ 0.5 |" in table


def test_family_tables_cover_every_param_of_every_family():
    hooks = _hook("reference_tables")
    page = (DOCS / "families.md").read_text(encoding="utf-8")
    rendered = hooks.on_page_markdown(page, SimpleNamespace(file=SimpleNamespace(src_uri="families.md")), None, None)
    assert "<!-- family-params:" not in rendered
    assert "| `calibration_folds` |" in rendered


def test_a_key_without_a_meaning_fails_the_build():
    hooks = _hook("reference_tables")
    meanings = hooks._load_meanings()
    del meanings["config"]["split.seed"]
    with pytest.raises(hooks.ReferenceError, match="split.seed"):
        hooks.config_table(meanings)
    meanings = hooks._load_meanings()
    meanings["config"]["split.no_such_key"] = "gone"
    with pytest.raises(hooks.ReferenceError, match="no_such_key"):
        hooks.config_table(meanings)


def test_bench_tables_come_from_the_json():
    hooks = _hook("bench_tables")
    table = hooks.table("learning_curve")
    assert "| strategy |" in table and re.search(r"\| mixed \| 0\.\d{3} ± 0\.\d{3} \|.*: (met|missed)", table)
    assert "not committed yet" in hooks.table("no_such_bench")
