import hnswlib, sbert_retrieval.stores._hugepages as h
before = h.anonymous_ranges()
index = hnswlib.Index(space="cosine", dim=384)
index.init_index(max_elements=1280000, M=16, ef_construction=200)
for s, e in h.new_ranges(before, h.anonymous_ranges()):
    print(hex(s), hex(e), (e - s) / 2**20, "MiB")
