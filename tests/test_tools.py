"""Tools are thin scripts over the installed ``koda`` package, never over a path they edit."""

from tests.helpers.tools import TOOLS


def test_no_tool_edits_the_import_path():
    """A ``sys.path`` insert hides a broken install and imports whichever checkout sits next to
    the script; the package is installed (``pip install -e .``), so ``import koda`` suffices."""
    offenders = sorted(p.name for p in TOOLS.rglob("*.py") if "sys.path" in p.read_text())
    assert offenders == []
