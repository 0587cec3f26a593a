"""The package as a whole: every module is listed where a learner looks first, the version has one home,
and `import lora_lab` does not depend on Unix-only modules."""
import ast
import re
from pathlib import Path

import pytest

import lora_lab

PACKAGE = Path(lora_lab.__file__).parent
UNIX_ONLY = {"resource", "fcntl", "termios", "pwd", "grp"}


def test_every_module_is_listed_in_its_package_docstring():
    """Each package's docstring lists what it holds (modules and sub-packages), so the tree reads from the top:
    lora_lab's lists the layers and the commands, each layer's lists its modules."""
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        dotted = ".".join(folder.relative_to(PACKAGE.parent).parts)
        held = sorted([p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
                      + [d.name for d in folder.iterdir() if (d / "__init__.py").exists()])
        listed = set(re.findall(rf":mod:`{re.escape(dotted)}\.(\w+)`", ast.get_docstring(ast.parse(init.read_text()))))
        assert [m for m in held if m not in listed] == [], f"add a line for each to {init.relative_to(PACKAGE.parent)}"
        assert listed <= set(held), f"{init.relative_to(PACKAGE.parent)} lists modules that are gone"


def test_version_comes_from_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    if lora_lab.__version__ == "0+unknown":
        pytest.skip("lora_lab is not installed (a bare source checkout): no metadata to read the version from")
    assert lora_lab.__version__ == pyproject["project"]["version"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unix_only_import_at_module_level(path):
    """`import resource` at the top of a module made `import lora_lab` fail on Windows: import such modules
    inside the function that needs them, with an answer for the other systems."""
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert not names & UNIX_ONLY
