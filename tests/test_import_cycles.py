"""No import cycles inside the package, between any two modules (issue 9).

import-linter's `layers` contract (pyproject) keeps each layer from importing the layers above it, but it
says nothing about two modules of the same layer importing each other (`gateway.app` <-> `gateway.reloading`
was one). This test does, with grimp (the graph import-linter itself builds).

What counts as an import: every `import` statement grimp finds, wherever it sits. That includes imports
under `if TYPE_CHECKING:` (the graph is built with `exclude_type_checking_imports=False`, as the
import-linter contract counts them too: an annotation that names a module is a dependency on it, and a
cycle through annotations is the same knot to a reader) and imports inside a function (a lazy import
that closes a loop is a cycle that only moved to run time). A module that needs what imports it should
take a small Protocol of what it uses instead (`gateway.view.GatewayView`, `gateway.reloading.ReloadHost`).
"""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One import chain per cycle found, each starting and ending at the same module."""
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            members = frozenset(back)
            if members not in seen:
                seen.add(members)
                cycles.append([importer, *back])
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    graph = grimp.build_graph("aifabric", exclude_type_checking_imports=False, cache_dir=None)
    assert len(graph.modules) > 100  # the graph really is of the package, not of an empty path

    cycles = _cycles(graph)

    assert cycles == [], "import cycles (give one side a Protocol of what it uses):\n" + "\n".join(
        " -> ".join(chain) for chain in cycles
    )


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The check itself: a graph with a loop through a third module reports it, once."""
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.a", imported="pkg.d")  # no way back from d

    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
