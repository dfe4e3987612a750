"""Where the non-graph part of a 10k batch goes at 1M, and whether the writer's SQLite page cache
size changes it: time upsert+flush split into hnswlib insert, lexical sync, and the rest."""
from __future__ import annotations
import sys, time, json
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np
import store_scale as ss
from sbert_retrieval.stores import local as local_module
from sbert_retrieval.stores import HnswStore, HnswParams, Record
from sbert_retrieval.models import EmbeddingSpec

path, cache_kib, first, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
original = local_module._connect
def connect(file, *, read_only):
    connection = original(file, read_only=read_only)
    if not read_only and cache_kib:
        connection.execute(f"PRAGMA cache_size = -{cache_kib}")
    return connection
local_module._connect = connect

class Timed(HnswStore):
    graph_s = 0.0
    lexical_s = 0.0
    def _index_add(self, labels, vectors):
        t = time.perf_counter()
        try: super()._index_add(labels, vectors)
        finally: self.graph_s += time.perf_counter() - t
    def _sync_lexical(self):
        t = time.perf_counter()
        try: super()._sync_lexical()
        finally: self.lexical_s += time.perf_counter() - t

spec = EmbeddingSpec("bench", ss.DIM, "mean", True, 256, "bench")
params = HnswParams(m=ss.M, ef_construction=ss.EF_CONSTRUCTION, ef_search=ss.EF_SEARCH)
t = time.perf_counter()
store = Timed(path, spec, params=params)
print(f"open {time.perf_counter()-t:.2f} s, count {store.count():,}, cache {cache_kib} KiB", flush=True)
for b in range(batches):
    start = first + b * 10_000
    vectors = ss.unit_vectors(start, 10_000)
    records = [Record(ss.point_id(start + j), vectors[j], ss.payload(start + j, 10**9)) for j in range(10_000)]
    g0, l0 = store.graph_s, store.lexical_s
    t = time.perf_counter()
    store.upsert(records); store.flush()
    total = time.perf_counter() - t
    g, l = store.graph_s - g0, store.lexical_s - l0
    print(json.dumps({"batch": b, "total": round(total, 3), "graph": round(g, 3), "lexical": round(l, 3), "rest": round(total - g - l, 3)}), flush=True)
t = time.perf_counter(); store.close(); print(f"close {time.perf_counter()-t:.2f} s")
