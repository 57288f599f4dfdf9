"""The global lineage: one connected, acyclic asset graph from the inbox to the stats, held by a snapshot
of its edges; and automation follows the edges between tenant and campaign partitions only where it should."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from email_engine_assets.definitions import defs
from email_engine_tests.graphs import components as graph_components

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph_edges.txt"
UPDATE_ENV = "UPDATE_SNAPSHOTS"


def graph_edges(definitions: dg.Definitions) -> list[str]:
    """``upstream -> downstream [PartitionMapping]``, one per dependency between assets (checks are not nodes)."""
    graph = definitions.resolve_asset_graph()
    edges = []
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            mapping = type(graph.get_partition_mapping(key, parent)).__name__
            edges.append(f"{parent.to_user_string()} -> {key.to_user_string()} [{mapping}]")
    return sorted(edges)


def components(definitions: dg.Definitions) -> list[set[str]]:
    """The connected components of the asset graph, edges taken both ways."""
    graph = definitions.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    edges = {(p.to_user_string(), k.to_user_string()) for k in keys for p in graph.get(k).parent_keys}
    return graph_components({k.to_user_string() for k in keys}, edges)


def test_the_asset_graph_is_one_connected_component_from_the_inbox_to_the_stats():
    (component,) = components(defs)
    assert {"contact_imports", "segments", "campaign_audiences", "campaign_sends", "delivery_events",
            "suppressions", "campaign_stats"} <= component
    graph = defs.resolve_asset_graph()
    # the path the issue names, edge by edge (the feedback loop stays out: segments read suppressions
    # when they are built and the next send re-reads them when it claims its rows, without an edge back)
    path = ["segments", "campaign_audiences", "campaign_sends", "delivery_events", "suppressions"]
    for upstream, downstream in zip(path, path[1:]):
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(downstream)).parent_keys, (upstream, downstream)
    assert {dg.AssetKey("campaign_sends"), dg.AssetKey("delivery_events")} <= graph.get(dg.AssetKey("campaign_stats")).parent_keys
    assert dg.AssetKey("suppressions") not in graph.get(dg.AssetKey("segments")).parent_keys


def test_the_asset_graph_edges_match_the_checked_in_snapshot():
    current = "\n".join(graph_edges(defs)) + "\n"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    recorded = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    assert current == recorded, (
        f"the asset graph's edges differ from {SNAPSHOT.relative_to(Path.cwd()) if SNAPSHOT.is_relative_to(Path.cwd()) else SNAPSHOT}; "
        f"if the change is on purpose, rewrite it with {UPDATE_ENV}=1 pytest {Path(__file__).name} and commit the diff"
    )


def test_graph_components_are_counted_both_ways():
    @dg.asset
    def a(): ...

    @dg.asset(deps=[a])
    def b(): ...

    @dg.asset
    def c(): ...

    assert sorted(map(sorted, components(dg.Definitions(assets=[a, b, c])))) == [["a", "b"], ["c"]]


def _report(instance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))


def test_automation_never_follows_a_tenant_edge_into_campaign_assets():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        instance.add_dynamic_partitions("campaign", ["acme.spring", "globex.fall"])
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

        def requested() -> dict[str, set]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            campaign_assets = ("campaign_audiences", "campaign_sends", "campaign_stats")
            return {k: result.get_requested_partitions(dg.AssetKey(k)) for k in campaign_assets
                    if result.get_requested_partitions(dg.AssetKey(k))}

        # a tenant's new segments or tenant files never start a campaign (a send is gated by its state)
        _report(instance, "segments", "acme")
        _report(instance, "tenant_files", "acme")
        assert requested() == {}
        # each campaign's stats follow its own send, although globex never had feedback applied
        _report(instance, "campaign_sends", "acme.spring")
        _report(instance, "campaign_sends", "globex.fall")
        assert requested() == {"campaign_stats": {"acme.spring", "globex.fall"}}
        _report(instance, "campaign_stats", "acme.spring")
        _report(instance, "campaign_stats", "globex.fall")
        assert requested() == {}
        # a tenant's feedback does not recount every campaign of every tenant
        _report(instance, "delivery_events", "acme")
        assert requested() == {}
