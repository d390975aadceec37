"""How many templates an identify searches, for its FPIR threshold (gateway.operating_points.decide_identify).

A count per search would double the Milvus work of identify (and on a server a Strong count costs ~200 ms), so
counts are cached for a few seconds per gallery and dropped when this replica writes to the gallery. The count
covers every embedder version's templates of the gallery: an upper bound on what one search sees, so the
threshold errs on the strict side. A gallery grown by another replica within the cache time is undercounted
for at most that long; thresholds are published for sizes 1, 2, 5, 10, ... and the next size up is used, which
absorbs growth of up to 2-2.5x.
"""

from __future__ import annotations

import time

from gateway.store import Store


class GallerySizes:
    def __init__(self, store: Store, ttl_s: float = 10.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, int]] = {}

    async def templates(self, tenant: str, gallery: str) -> int:
        key = (tenant, gallery)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        _, templates = await self.store.gallery_counts(tenant, gallery)
        self._cache[key] = (time.monotonic(), templates)
        return templates

    def forget(self, tenant: str, gallery: str) -> None:
        self._cache.pop((tenant, gallery), None)
