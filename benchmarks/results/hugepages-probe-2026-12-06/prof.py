import sys, time, os, resource, tempfile, numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import store_scale as S
from sbert_retrieval.stores.hnsw import HnswStore
from sbert_retrieval.stores import lexical_index as L
acc = {"hnsw": 0.0, "lex": 0.0}
def wrap(cls, name, key):
    f = getattr(cls, name)
    def g(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally: acc[key] += time.perf_counter() - t
    setattr(cls, name, g)
wrap(HnswStore, "_index_add", "hnsw"); wrap(L.LexicalIndex, "apply", "lex")
N = int(sys.argv[1]); B = 10000
d = tempfile.mkdtemp(dir="/work")
o = S.Ours(d + "/s"); o.create()
for b in range(N // B):
    recs = o.records(b * B, B, 1000000)
    acc["hnsw"] = acc["lex"] = 0.0
    c0 = os.times(); t = time.perf_counter()
    o.write(recs)
    w = time.perf_counter() - t; c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(f"{b+1:3d} wall {w:5.2f} hnsw {acc['hnsw']:5.2f} lex {acc['lex']:5.2f} rest {w-acc['hnsw']-acc['lex']:5.2f} cpu {cpu:5.2f}", flush=True)
o.close()
