import sys, time, numpy as np, hnswlib, re
N = int(sys.argv[1]); B = 10000
idx = hnswlib.Index(space="cosine", dim=384)
idx.init_index(max_elements=1024, M=16, ef_construction=200, random_seed=100, allow_replace_deleted=True)
times = []
for b in range(N // B):
    v = np.random.default_rng(b).standard_normal((B, 384)).astype(np.float32)
    t = time.perf_counter()
    need = idx.get_current_count() + B
    if need > idx.get_max_elements():
        idx.resize_index(max(need, 2 * idx.get_max_elements()))
    idx.add_items(v, np.arange(b * B, (b + 1) * B), num_threads=2, replace_deleted=True)
    times.append(time.perf_counter() - t)
ahp = re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)
print(f"N={N} first5={np.median(times[:5]):.2f} last5={np.median(times[-5:]):.2f} ratio={np.median(times[-5:])/np.median(times[:5]):.2f} AnonHuge={int(ahp)//1024}MiB")
print(" ".join(f"{x:.1f}" for x in times))
