import sys, time, os, re, numpy as np
sys.path.insert(0, "/work/bench/benchmarks")
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
path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
o = S.Ours(path)
if start == 0: o.create()
else:
    t = time.perf_counter(); o.open(); print(f"open {time.perf_counter()-t:.2f}s", flush=True)
B = 10000
def ahp():
    return int(re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) >> 10
for b in range(n):
    recs = o.records(start + b * B, B, 1000000)
    acc["hnsw"] = acc["lex"] = 0.0
    c0 = os.times(); t = time.perf_counter()
    r0 = open("/proc/self/io").read()
    o.write(recs)
    w = time.perf_counter() - t; c1 = os.times()
    rb = lambda s: int(re.search(r"read_bytes: (\d+)", s).group(1))
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(f"{b+1:3d} wall {w:5.2f} hnsw {acc['hnsw']:5.2f} lex {acc['lex']:5.2f} rest {w-acc['hnsw']-acc['lex']:5.2f} cpu {cpu:5.2f} diskread {(rb(open('/proc/self/io').read())-rb(r0))>>20} MiB AHP {ahp()} MiB", flush=True)
o.close()
