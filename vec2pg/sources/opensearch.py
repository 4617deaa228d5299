"""OpenSearch: what :mod:`vec2pg.sources.elasticsearch` does, with OpenSearch's point in
time API and its ``knn_vector`` fields.

OpenSearch forked Elasticsearch 7.10 and kept its REST wire format: the chains (shards and
``_seq_no`` ranges of them), the cursors and the decoding are Elasticsearch's. What
differs is here: a point in time is opened with ``POST /{index}/_search/point_in_time``
(from 2.4) and closed with ``DELETE /_search/point_in_time``; vectors are ``knn_vector``
(``data_type`` ``float``, ``byte``, or ``binary`` bits stored as ``dimension / 8`` signed
bytes), their metric is the ``space_type`` of the field or of its ``method``; and
OpenSearch's security plugin takes a user and password (HTTP basic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vec2pg.errors import SourceUnsupported
from vec2pg.records import Metric, VectorField
from vec2pg.sources.elasticsearch import (
    CLOSE_TIMEOUT,
    DEFAULT_PAGE_SIZE,
    IDS_PAGE_SIZE,
    KEEP_ALIVE,
    ElasticsearchSource,
    VectorSpec,
    index_path,
    json_body,
    vector_field,
)

_METRICS = {
    "l2": Metric.EUCLIDEAN,
    "cosinesimil": Metric.COSINE,
    "innerproduct": Metric.DOT,
    "l1": Metric.MANHATTAN,
    "hamming": Metric.HAMMING,
    "hammingbit": Metric.HAMMING,
    # linf (Chebyshev) has no pgvector operator: the column says no metric.
}
#: knn_vector's data types, as vec2pg's element types.
_ELEMENTS = {"float": "float", "byte": "byte", "binary": "bit"}


class OpenSearchSource(ElasticsearchSource):
    """Read every document of an OpenSearch index, alias or pattern (each index of an
    alias or pattern is a namespace)."""

    kind = "opensearch"
    product = "OpenSearch"
    envvar = "OPENSEARCH"
    #: Point in time arrived in OpenSearch 2.4.
    minimum = (2, 4)

    def __init__(
        self,
        index: str,
        *,
        url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        ids_page_size: int = IDS_PAGE_SIZE,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(
            index,
            url=url,
            user=user,
            password=password,
            ca_certs=ca_certs,
            page_size=page_size,
            ids_page_size=ids_page_size,
            timeout=timeout,
        )

    def _has_exclude_vectors(self, version: tuple[int, int, int] | None) -> bool:
        return False  # OpenSearch returns knn_vector values in _source (derived or kept)

    def _knows_exclude_vectors(self) -> bool:
        return False

    def _open_pit(self, index: str) -> str:
        answer = self._post(
            f"/{index_path(index)}/_search/point_in_time",
            None,
            f"opening a point in time on {index!r}",
            {"keep_alive": KEEP_ALIVE},
        )
        return str(answer["pit_id"])

    def _close_pit(self, pit: str) -> None:
        body = json_body({"pit_id": [pit]})
        self._http.request("DELETE", "/_search/point_in_time", body=body, timeout=CLOSE_TIMEOUT)

    def _credentials_hint(self) -> str:
        return f"check --user and --password ({self.envvar}_USER, {self.envvar}_PASSWORD)"

    def _no_credentials_hint(self) -> str:
        return "the server needs credentials: pass --user and --password"

    def _vector(
        self,
        index: str,
        name: str,
        path: tuple[str, ...],
        kind: Any,
        spec: Mapping[str, Any],
        nested: bool,
    ) -> tuple[VectorField, VectorSpec] | None:
        if kind != "knn_vector":
            return None
        data_type = str(spec.get("data_type") or "float")
        element = _ELEMENTS.get(data_type)
        if element is None:
            raise SourceUnsupported(
                f"{self.where}: vector {name!r} of index {index!r} has data_type "
                f"{data_type!r}, which vec2pg does not know"
            )
        if nested and element == "bit":
            return None  # a list of bit vectors has no column type: kept in the metadata
        dims = spec.get("dimension")
        if not isinstance(dims, int) or dims < 1:
            model = f" (it comes from model {spec['model_id']!r})" if "model_id" in spec else ""
            raise SourceUnsupported(
                f"{self.where}: vector {name!r} of index {index!r} has no dimension in its "
                f"mapping{model}, which vec2pg needs for the column"
            )
        method = spec.get("method") or {}
        space = spec.get("space_type") or method.get("space_type")
        space = str(space or ("hamming" if element == "bit" else "l2"))  # OpenSearch's defaults
        return vector_field(name, path, element, dims, _METRICS.get(space), nested)
