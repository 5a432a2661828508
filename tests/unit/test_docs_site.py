"""make docs fails on what Zensical's strict mode lets through: a page the navigation names
that does not exist, and a page no navigation entry reaches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
assert spec is not None and spec.loader is not None
generate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate)


def test_the_site_has_every_page_in_its_navigation() -> None:
    assert generate.check_navigation() == []  # the generated pages count as present


def test_a_missing_page_and_an_orphan_are_named(tmp_path: Path) -> None:
    (tmp_path / "docs" / "how-to").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# Home\n")
    (tmp_path / "docs" / "how-to" / "orphan.md").write_text("# Orphan\n")
    config = tmp_path / "zensical.toml"
    config.write_text('[project]\nnav = [{ "Home" = "index.md" }, '
                      '{ "Guides" = [{ "Gone" = "how-to/gone.md" }] }]\n')
    problems = generate.check_navigation(config, tmp_path / "docs")
    assert "the navigation names how-to/gone.md, which does not exist" in problems
    assert "how-to/orphan.md is in no navigation entry" in problems
