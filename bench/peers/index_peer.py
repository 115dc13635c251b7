"""The peer of `meldnet-bench index`: faiss (PyPI `faiss-cpu`) on the same
hashes and queries. Arguments: entries file, queries file (32 raw bytes per
hash), radius (matches have distance < radius). Builds IndexBinaryMultiHash
(16 tables of 16 bits, every value within 1 bit probed: the same
method as ours) and IndexBinaryFlat (brute
force), runs every query one at a time on one thread, and prints one JSON
line: build seconds, per-query latencies, and the matches per query."""
import json
import sys
import time

import faiss
import numpy as np

faiss.omp_set_num_threads(1)
entries = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(-1, 32)
queries = np.fromfile(sys.argv[2], dtype=np.uint8).reshape(-1, 32)
radius = int(sys.argv[3])
flat_queries = int(sys.argv[4]) if len(sys.argv) > 4 else len(queries)
out = {}
def multihash():
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    # Probe every chunk value within 1 bit, as ours does: exact at radius 32.
    index.nflip = 1
    return index


for name, make in (("multihash", multihash), ("flat", lambda: faiss.IndexBinaryFlat(256))):
    t = time.perf_counter()
    index = make()
    index.add(entries)
    build = time.perf_counter() - t
    lat, counts = [], []
    n = len(queries) if name == "multihash" else min(flat_queries, len(queries))
    for q in queries[:n]:
        t = time.perf_counter()
        lims, _, _ = index.range_search(q.reshape(1, 32), radius)
        lat.append(time.perf_counter() - t)
        counts.append(int(lims[1] - lims[0]))
    out[name] = {"build_s": build, "latencies_s": lat, "matches": counts}
print(json.dumps(out))
