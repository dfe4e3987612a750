import sys, time, numpy as np
sys.path.insert(0, "/work/bench/benchmarks")
import store_scale as S
import sbert_retrieval.stores._hugepages as h
import sbert_retrieval.stores.hnsw as hn
mode = sys.argv[1]
if mode == "off":
    h.MIN_BYTES = 1 << 62
elif mode == "collapse":
    orig = h.huge_pages
    hn.huge_pages = lambda collapse=True: orig(collapse=True)
o = S.Ours("/work/s1m")
t = time.perf_counter(); o.open(read_only=True); op = time.perf_counter() - t
qs = S.query_vectors(2000)
for q in qs[:20]: o.search(q, False)
lat = []
for q in qs:
    t = time.perf_counter(); o.search(q, False); lat.append(time.perf_counter() - t)
lat = np.array(lat) * 1000
flat = []
for q in qs[:300]:
    t = time.perf_counter(); o.search(q, True); flat.append(time.perf_counter() - t)
flat = np.array(flat) * 1000
import re
ahp = int(re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) >> 10
print(f"{mode:9s} open {op:5.2f}s p50 {np.median(lat):.3f} p90 {np.percentile(lat,90):.3f} p99 {np.percentile(lat,99):.3f} | filtered p50 {np.median(flat):.2f} p99 {np.percentile(flat,99):.2f} | AHP {ahp} MiB", flush=True)
o.close()
