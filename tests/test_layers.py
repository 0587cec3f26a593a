"""The package's architecture, checked: its folders are layers, and a module imports only from its own layer or
from layers below it (``lora_lab/__init__.py`` names the layers). No import cycle; imports sit at the top of a
module unless the line says why it is lazy; names that cross modules are public.

The imports are read from the source (nothing is imported), so a hidden import inside a function counts too."""
import ast
from pathlib import Path

import pytest

import lora_lab

PACKAGE = Path(lora_lab.__file__).parent
# lowest first; a module may import from its own layer or any layer before it
LAYERS = ["utils", ("models", "data"), "lora", "train", "experiments", "course", "(commands)"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "(commands)"
    for i, layer in enumerate(LAYERS):
        if sub == layer or (isinstance(layer, tuple) and sub in layer):
            return i
    raise AssertionError(f"{module}: not in a layer; add its folder to LAYERS in this test and to lora_lab/__init__.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path):
    """(imported module, names, at module level?, line) for every lora_lab import in the file."""
    tree = ast.parse(path.read_text())
    top_level = set()
    todo = list(tree.body)
    while todo:  # module level includes the bodies of top-level if/try blocks
        node = todo.pop()
        top_level.add(id(node))
        for field in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try)):
                todo += getattr(node, field, [])
        for handler in getattr(node, "handlers", []):
            todo += handler.body
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "lora_lab":
                names = [a.name for a in node.names]
                known = modules()
                # `from . import x` imports the module lora_lab.x
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                for t in subs or [target]:
                    yield t, names, id(node) in top_level, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lora_lab":
                    yield a.name, [], id(node) in top_level, node.lineno


EDGES = [(m, t, names, top, line) for m, p in modules().items() for t, names, top, line in imports(p)]


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_points_up_a_layer(module):
    up = [f"line {line}: {t} (layer {LAYERS[layer_of(t)]})" for m, t, _, _, line in EDGES
          if m == module and t != "lora_lab" and layer_of(t) > layer_of(m)]
    assert up == [], f"{module} (layer {LAYERS[layer_of(module)]}) imports from a higher layer: {up}"


def test_no_import_cycle():
    graph: dict[str, set] = {}
    for m, t, _, _, _ in EDGES:
        if t != m and t != "lora_lab":
            graph.setdefault(m, set()).add(t)
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_most_imports_are_at_the_top_of_their_module():
    """A module's header shows what it depends on: at least 85% of lora_lab's own imports are at module level,
    and each one inside a function says why on its line (a comment)."""
    inner = [(m, t, line) for m, t, _, top, line in EDGES if not top]
    share = 1 - len(inner) / len(EDGES)
    assert share >= 0.85, f"only {share:.0%} of imports at module level; inside functions: {inner}"
    for m, t, line in inner:
        text = modules()[m].read_text().splitlines()[line - 1]
        assert "#" in text, f"{m}:{line} imports {t} inside a function without saying why"


def test_private_names_stay_in_their_module():
    crossing = [f"{m} imports {n} from {t}" for m, t, names, _, _ in EDGES for n in names
                if n.startswith("_") and not n.startswith("__")]
    assert crossing == [], "make these public (no leading underscore) or keep them inside their module"


def test_no_module_over_600_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}, "split these by concept"


def test_both_backbones_implement_the_classifier_protocol():
    """The written contract (lora_lab.models.protocol.Classifier) holds for GPT-2 and MiniLM, and one model that
    lacks a member is refused: the check can fail."""
    transformers = pytest.importorskip("transformers")
    import torch

    from lora_lab.models.gpt2 import GPT, PRESETS
    from lora_lab.models.minilm import MiniLMClassifier
    from lora_lab.models.protocol import Classifier, length_mask

    gpt = GPT(PRESETS["tiny"]).to_classifier(2)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    bert = MiniLMClassifier(transformers.BertModel(cfg, add_pooling_layer=False))
    ids, lengths = torch.randint(0, 50, (2, 5)), torch.tensor([5, 3])
    for model in (gpt, bert):
        assert isinstance(model, Classifier)
        assert model(ids, lengths).shape == (2, 2)
        assert model.token_states(ids, lengths).shape[:2] == (2, 5)
    assert not isinstance(torch.nn.Linear(2, 2), Classifier)
    assert length_mask(ids, lengths).tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_environment_variables_are_read_in_one_place():
    """lora_lab.utils.env reads every LORA_LAB_* variable (utils.threads reads LORA_LAB_THREADS from the
    environment it is given, before torch loads); every variable named anywhere in the package is listed there."""
    import re

    from lora_lab.utils import env

    readers = [m for m, p in modules().items() if m not in ("lora_lab.utils.env", "lora_lab.utils.threads")
               and re.search(r"environ(\.get\(|\[)\s*[\"']LORA_LAB_", p.read_text())]
    assert readers == [], "read LORA_LAB_* variables through lora_lab.utils.env"
    named = {v for p in modules().values() for v in re.findall(r"\bLORA_LAB_[A-Z_]+[A-Z]\b", p.read_text())}
    assert named - set(env.VARIABLES) == set(), "document each variable in lora_lab.utils.env.VARIABLES"
    with pytest.raises(KeyError, match="add it to VARIABLES"):
        env.get("LORA_LAB_TYPO")
