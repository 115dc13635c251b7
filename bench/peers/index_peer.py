"""The peer of `meldnet-bench index`: faiss (PyPI `faiss-cpu`) on the same
hashes and queries. Arguments: entries file, queries file (32 raw bytes per
hash), radius (matches have distance < radius), how many queries the flat
index answers. Builds IndexBinaryMultiHash (16 tables of 16 bits, every
value within 1 bit probed: the same method as ours, exact at radius 32) and
IndexBinaryFlat (brute force), runs queries one at a time on one thread,
and prints one JSON line per index: build seconds, memory per entry (the
resident set grown for the multihash index, the codes for the flat one), per-query latencies and the sorted matching entry numbers
of each query."""
import json
import sys
import time

import faiss
import numpy as np

faiss.omp_set_num_threads(1)
entries = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(-1, 32)
queries = np.fromfile(sys.argv[2], dtype=np.uint8).reshape(-1, 32)
radius = int(sys.argv[3])
flat_queries = int(sys.argv[4])


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def multihash():
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    index.nflip = 1
    return index


for name, make, n in (
    ("multihash", multihash, len(queries)),
    ("flat", lambda: faiss.IndexBinaryFlat(256), min(flat_queries, len(queries))),
):
    before = rss_bytes()
    t = time.perf_counter()
    index = make()
    index.add(entries)
    build = time.perf_counter() - t
    # The flat index holds exactly its codes; the multihash index (built
    # first, in a fresh process) is measured by how much the process grew.
    grown = index.code_size * len(entries) if name == "flat" else rss_bytes() - before
    lat, matches = [], []
    for q in queries[:n]:
        t = time.perf_counter()
        lims, _, labels = index.range_search(q.reshape(1, 32), radius)
        lat.append(time.perf_counter() - t)
        matches.append(sorted(int(x) for x in labels[lims[0]:lims[1]]))
    print(json.dumps({
        "index": name,
        "build_s": build,
        "bytes_per_entry": grown / len(entries),
        "latencies_s": lat,
        "matches": matches,
    }), flush=True)
    del index
