import runpy, sys, json
off = sys.argv[1] == "off"
import sbert_retrieval.stores._hugepages as h
if off:
    h.MIN_BYTES = 1 << 62
sys.argv = ["store_scale.py", "--worker", "query", "--system", "ours", "--dir", "/work/s1m", "--points", "1000000", "--singles", "20", "--batch", "10000", "--queries", "200", "--recall-queries", "50"]
runpy.run_path("/work/bench/benchmarks/store_scale.py", run_name="__main__")
