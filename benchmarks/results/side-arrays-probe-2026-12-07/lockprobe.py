"""hnswlib alone: does advising the graph's smaller side arrays (link-list mutexes, 40 B per
element; linkLists_ pointers) for huge pages speed inserts into a large graph?"""
import re, sys, time
import numpy as np, hnswlib
import sbert_retrieval.stores._hugepages as h

min_mib, capacity, fill, timed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
h.MIN_BYTES = min_mib << 20
rng = np.random.default_rng(0)
index = hnswlib.Index(space="cosine", dim=384)
with h.huge_pages():
    index.init_index(max_elements=capacity, M=16, ef_construction=200, random_seed=1)
index.set_num_threads(2)
def batch(start, n=10_000):
    v = np.random.default_rng(start).standard_normal((n, 384)).astype(np.float32)
    t = time.perf_counter(); index.add_items(v, np.arange(start, start + n)); return time.perf_counter() - t
for s in range(0, fill, 10_000):
    batch(s)
times = [batch(fill + i * 10_000) for i in range(timed)]
ahp = int(re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) >> 10
print(f"MIN {min_mib} MiB cap {capacity} at {fill}: batches {' '.join(f'{t:.2f}' for t in times)} median {np.median(times):.2f} s, AHP {ahp} MiB", flush=True)
