import sys, time, ctypes, re, numpy as np, hnswlib
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def regions():
    out = []
    for line in open("/proc/self/maps"):
        parts = line.split()
        a, b = (int(x, 16) for x in parts[0].split("-"))
        if len(parts) < 6 and b - a > (512 << 20):
            out.append((a, b))
    return out
def ahp():
    return int(re.search(r"AnonHugePages:\s+(\d+)", open("/proc/self/smaps_rollup").read()).group(1)) >> 10
N = int(sys.argv[1]); B = 10000
idx = hnswlib.Index(space="cosine", dim=384)
idx.init_index(max_elements=N + 200000, M=16, ef_construction=200, random_seed=100, allow_replace_deleted=True)
def batch(b):
    v = np.random.default_rng(b).standard_normal((B, 384)).astype(np.float32)
    t = time.perf_counter()
    idx.add_items(v, np.arange(b * B, (b + 1) * B), num_threads=2, replace_deleted=True)
    return time.perf_counter() - t
times = [batch(b) for b in range(N // B)]
print("build:", " ".join(f"{x:.1f}" for x in times), flush=True)
b = N // B
pre = [batch(b + i) for i in range(4)]
print("pre-THP:", [round(x, 2) for x in pre], "AnonHuge MiB", ahp(), flush=True)
size_el = 16 * 2 * 4 + 4 + 384 * 4 + 8
for a, e in regions():
    print("region MiB", (e - a) >> 20)
    t = time.perf_counter()
    start = (a + (2 << 20) - 1) & ~((2 << 20) - 1)
    r1 = libc.madvise(ctypes.c_void_p(a), e - a, 14)
    used = idx.get_current_count() * size_el
    end = min(e, (a + used) & ~((2 << 20) - 1))
    r2 = libc.madvise(ctypes.c_void_p(start), end - start, 25)
    print("madvise", r1, r2, ctypes.get_errno(), "collapse s", round(time.perf_counter() - t, 2), flush=True)
post = [batch(b + 4 + i) for i in range(6)]
print("post-THP:", [round(x, 2) for x in post], "AnonHuge MiB", ahp(), flush=True)
