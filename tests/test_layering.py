"""Imports point down the stages (developers' guide: audio -> face -> motion -> render -> lipsync ->
refine -> io; engines, pipeline, then the front ends on top).

Every module of ``sadtalker_ext`` is parsed with ``ast`` (every ``import`` statement, also those inside
functions and ``TYPE_CHECKING`` blocks) and mapped to its layer; an import of a higher layer from a
lower one fails the test. The order is written here from the guide, not read from the code: a new
package must be placed in it on purpose.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sadtalker_ext"

#: lowest first; a module may import its own layer and any layer listed before it.
LAYERS = [
    # shared by everything: the error tree, memory guards, the options, finding/loading model files, and
    # what the front ends share (tab name, setting keys, the error tab: stdlib only, for scripts/)
    ("base", {"sadtalker_ext", "errors", "memory", "options", "models", "frontend"}),
    # the stages, in data-flow order
    ("audio", {"audio"}),
    ("face", {"face"}),
    ("motion", {"motion"}),
    ("render", {"render"}),
    # the chunk stream the renderers' engines yield and the post stages map (FrameChunk, RunContext)
    ("frames", {"frames"}),
    ("lipsync", {"lipsync"}),
    ("refine", {"refine"}),
    ("io", {"io"}),
    # motion + renderer behind one interface, then the run
    ("engines", {"engines"}),
    ("pipeline", {"pipeline"}),
    # the Host protocol a run is given (the WebUI's adapter implements it, far above)
    ("host protocol", {"host.base"}),
    ("jobs", {"jobs"}),
    # front ends: the batch runner (driven by the CLI and the tab), the HTTP API (mounted by the standalone
    # server and the WebUI), the tab and its standalone server, the command line (serves the tab), the WebUI
    # adapter (registers tab, settings and API), the ``python -m`` entry
    ("batch", {"batch"}),
    ("api", {"api"}),
    ("ui", {"ui"}),
    ("cli", {"cli"}),
    ("host", {"host"}),
    ("entry", {"__main__"}),
]

#: (importing module, imported module) pairs still running up, each with the work that removes it: none
#: (the last, refine -> host.base, went when Img2ImgRequest moved to refine/params.py).
KNOWN: set = set()

_RANK = {}
for _i, (_name, _parts) in enumerate(LAYERS):
    for _p in _parts:
        _RANK[_p] = (_i, _name)


def layer_of(module: str) -> tuple[int, str]:
    """(rank, layer name) of a dotted module name inside the package; KeyError for an unplaced one."""
    parts = module.split(".")
    assert parts[0] == "sadtalker_ext", module
    if len(parts) == 1:
        return _RANK["sadtalker_ext"]
    for n in (2, 1):  # "host.base" before "host"
        key = ".".join(parts[1:1 + n])
        if len(parts) > n and key in _RANK:
            return _RANK[key]
    raise KeyError(module)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    p = PACKAGE.parent.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """The package modules ``path`` imports (absolute dotted names) with their line numbers."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # "from . import x" imports the submodule x when there is one
                sub = f"{mod}.{a.name}"
                out.append((sub if _is_module(sub) else mod, node.lineno))
    return [(m, line) for m, line in out if m == "sadtalker_ext" or m.startswith("sadtalker_ext.")]


def upward_imports(pairs):
    """The (importer, imported, line) triples whose imported layer is above the importer's."""
    bad = []
    for src, dst, line in pairs:
        (rs, ls), (rd, ld) = layer_of(src), layer_of(dst)
        if rd > rs:
            bad.append(f"{src}:{line} ({ls}) imports {dst} ({ld})")
    return sorted(set(bad))


def _all_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _module_name(path)
        for dst, line in imports_of(path):
            yield src, dst, line


def test_every_module_has_a_layer():
    unplaced = sorted({m for path in PACKAGE.rglob("*.py") for m in [_module_name(path)] if _try(m) is None})
    assert not unplaced, f"place these in LAYERS (tests/test_layering.py): {unplaced}"


def _try(module):
    try:
        return layer_of(module)
    except KeyError:
        return None


def test_imports_point_down_the_stages():
    pairs = [(s, d, line) for s, d, line in _all_imports() if (s, d) not in KNOWN]
    bad = upward_imports(pairs)
    assert not bad, "imports running up the layers:\n" + "\n".join(bad)


def test_the_checker_sees_upward_and_relative_imports(tmp_path):
    # the checker itself: an upward pair is reported, a downward one is not, the host protocol sits below
    # the jobs, the adapter above the API
    assert upward_imports([("sadtalker_ext.audio.phonemes", "sadtalker_ext.motion.lite.visemes", 1)])
    assert not upward_imports([("sadtalker_ext.motion.lite.visemes", "sadtalker_ext.audio.events", 1)])
    assert not upward_imports([("sadtalker_ext.jobs", "sadtalker_ext.host.base", 1)])
    assert upward_imports([("sadtalker_ext.refine.stage", "sadtalker_ext.host.base", 1)])
    assert upward_imports([("sadtalker_ext.api.auth", "sadtalker_ext.host.a1111", 1)])
    assert not upward_imports([("sadtalker_ext.host.a1111", "sadtalker_ext.api.auth", 1)])
    # relative imports resolve against the module's package, function-level imports are seen
    found = dict(imports_of(PACKAGE / "engines" / "video.py"))
    assert "sadtalker_ext.face.tracking" in found and "sadtalker_ext.errors" in found
    found = dict(imports_of(PACKAGE / "jobs.py"))
    assert "sadtalker_ext" in found and "sadtalker_ext.host.base" in found


@pytest.mark.parametrize("moved, home", [
    ("sadtalker_ext.motion.lite.visemes:PhonemeEvent", "sadtalker_ext.audio.events"),
    ("sadtalker_ext.lipsync.compositing:composite", "sadtalker_ext.face.masks"),
    ("sadtalker_ext.lipsync.compositing:polygon_mask", "sadtalker_ext.face.masks"),
    ("sadtalker_ext.lipsync.stage:FaceTracker", "sadtalker_ext.face.tracking"),
    ("sadtalker_ext.engines.base:RunContext", "sadtalker_ext.frames"),
])
def test_moved_names_are_still_importable_where_they_were(moved, home):
    import importlib

    mod, _, name = moved.partition(":")
    obj = getattr(importlib.import_module(mod), name)
    assert obj.__module__ == home and getattr(importlib.import_module(home), name) is obj
