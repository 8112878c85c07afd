"""InfluxQL targets for the Grafana Foundation SDK.

The SDK ships typed query models for many data sources, but not for InfluxDB. It is built
to be extended: a query type is any ``Dataquery`` with ``to_json``/``from_json``, registered
under its data-source type so that ``Dashboard.from_json`` decodes it again. An InfluxQL
query is small (raw query text, result format), so this is the whole of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE_TYPE = "influxdb"

ResultFormat = Literal["time_series", "table"]


@dataclass
class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL query of a panel (Grafana's InfluxDB data source, InfluxQL mode)."""

    ref_id: str
    query: str
    datasource: DataSourceRef
    result_format: ResultFormat = "time_series"
    alias: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            out["alias"] = self.alias
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            ref_id=data["refId"],
            query=data["query"],
            datasource=DataSourceRef.from_json(data["datasource"]),
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias"),
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder form, as the SDK's panel builders take targets."""

    def __init__(self, ref_id: str, query: str, datasource: DataSourceRef, *, table: bool = False, alias: str = ""):
        self._query = InfluxQLQuery(ref_id, query, datasource, "table" if table else "time_series", alias or None)

    def build(self) -> InfluxQLQuery:
        return self._query


def register() -> None:
    """Let ``Dashboard.from_json`` decode InfluxDB targets as InfluxQLQuery (idempotent)."""
    cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(DATASOURCE_TYPE, InfluxQLQuery.from_json))
