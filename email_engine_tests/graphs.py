"""Connected components of an undirected view of a graph: the lineage test and the browser test
check the code location's graph and the drawn one with the same rule."""

from __future__ import annotations


def components(nodes: set[str], edges: set[tuple[str, str]]) -> list[set[str]]:
    """The connected components of ``nodes``, each edge ``(a, b)`` taken both ways."""
    neighbours: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    unseen, found = set(nodes), []
    while unseen:
        stack, component = [unseen.pop()], set()
        while stack:
            node = stack.pop()
            component.add(node)
            stack += [n for n in neighbours[node] if n in unseen]
            unseen -= neighbours[node]
        found.append(component)
    return found
