import sys, time, re, numpy as np
sys.path.insert(0, "/work/bench/benchmarks")
import store_scale as S
import sbert_retrieval.stores._hugepages as h
import sbert_retrieval.stores.hnsw as hn
mode = sys.argv[1]; path = sys.argv[2]
if mode == "off":
    h.MIN_BYTES = 1 << 62
elif mode == "collapse":
    orig = h.huge_pages
    hn.huge_pages = lambda collapse=True: orig(collapse=True)
o = S.Ours(path)
t = time.perf_counter(); o.open(read_only=True); op = time.perf_counter() - t
st = o.store
qs = S.query_vectors(1000)
for q in qs[:20]: o.search(q, False)
def timed(f, qs):
    lat = []
    for q in qs:
        t = time.perf_counter(); f(q); lat.append(time.perf_counter() - t)
    return np.array(lat) * 1000
full = timed(lambda q: o.search(q, False), qs)
raw = timed(lambda q: st._index.knn_query(q.reshape(1, -1), k=10, num_threads=1), qs)
full2 = timed(lambda q: o.search(q, False), qs)
flt = timed(lambda q: o.search(q, True), qs[:300])
ahp = int(re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) >> 10
print(f"{mode:9s} open {op:5.2f}s search p50 {np.median(full):.3f}/{np.median(full2):.3f} p99 {np.percentile(full,99):.3f} | raw knn p50 {np.median(raw):.3f} | filtered p50 {np.median(flt):.2f} p99 {np.percentile(flt,99):.2f} | AHP {ahp} MiB", flush=True)
if len(sys.argv) > 3:
    import cProfile, pstats
    pr = cProfile.Profile(); pr.enable()
    for q in qs[:300]: o.search(q, True)
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(14)
    pr = cProfile.Profile(); pr.enable()
    for q in qs[:1000]: o.search(q, False)
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(14)
o.close()
