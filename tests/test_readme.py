"""The README's library example runs as written (doctest)."""

from __future__ import annotations

import doctest
from pathlib import Path


def test_readme_examples() -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    result = doctest.testfile(str(readme), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5 and result.failed == 0


def test_readme_deviation_table_is_current() -> None:
    from harness.cli import deviation_table

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("<!-- deviations:start -->\n") + len("<!-- deviations:start -->\n")
    end = text.index("<!-- deviations:end -->")
    assert text[start:end].strip() == deviation_table().strip(), "run `ptcheck deviations` and paste the table"
