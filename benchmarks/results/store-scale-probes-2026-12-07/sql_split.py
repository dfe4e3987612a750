import sys, time, contextlib, json
sys.path.insert(0, "/work/main/benchmarks")
import store_scale as ss
from sbert_retrieval.stores import HnswStore, HnswParams, Record
from sbert_retrieval.models import EmbeddingSpec
path, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T = {}
def add(k, v): T[k] = T.get(k, 0) + v
class S(HnswStore):
    def _existing(self, c, ids):
        t = time.perf_counter(); r = super()._existing(c, ids); add("existing", time.perf_counter() - t); return r
    def _write_fields(self, c, rows):
        t = time.perf_counter(); super()._write_fields(c, rows); add("fields", time.perf_counter() - t)
    @contextlib.contextmanager
    def _transaction(self):
        assert self._writer is not None
        t = time.perf_counter(); self._writer.execute("BEGIN IMMEDIATE")
        try:
            yield self._writer
        except BaseException:
            self._writer.execute("ROLLBACK"); raise
        t1 = time.perf_counter(); self._writer.execute("COMMIT"); t2 = time.perf_counter()
        add("txn_body", t1 - t); add("commit", t2 - t1)
    def _index_add(self, labels, vectors):
        t = time.perf_counter(); super()._index_add(labels, vectors); add("graph", time.perf_counter() - t)
    def _sync_lexical(self):
        t = time.perf_counter(); super()._sync_lexical(); add("lexical", time.perf_counter() - t)
spec = EmbeddingSpec("bench", ss.DIM, "mean", True, 256, "bench")
store = S(path, spec, params=HnswParams(m=ss.M, ef_construction=ss.EF_CONSTRUCTION, ef_search=ss.EF_SEARCH))
for b in range(n):
    start = first + b * 10_000
    v = ss.unit_vectors(start, 10_000)
    recs = [Record(ss.point_id(start + j), v[j], ss.payload(start + j, 10**9)) for j in range(10_000)]
    T.clear(); t = time.perf_counter(); store.upsert(recs); store.flush(); total = time.perf_counter() - t
    print(json.dumps({"b": b, "total": round(total, 3), **{k: round(v, 3) for k, v in T.items()}}))
store.close()
