"""Run inside a process whose libcuda.so.1 is tests/cudaemu/fake_libcuda.cpp (LD_LIBRARY_PATH): the
extension's CUDA host path end to end, over host memory. Prints one JSON line for tests/test_cudaemu.py."""
import ctypes
import json

import torch

from benchsuite import _core
from benchsuite.gradscan import _cuda, _native, planted, signature

facts = _core.cuda_driver()
state = _cuda.load_kernel(0)
out = {"facts": facts, "ready": state.ready, "error": state.error, "route": state.route}
if state.ready:
    suite = planted.probe_suite()
    views = [v for v in suite.placed("cpu") if v.numel()]
    labels = [lab for lab, t in zip(suite.labels, suite.tensors) if t.numel()]
    tables = _native.TableCache()
    tables.update(views)
    n = len(views)
    acc = torch.zeros(2, n * 6, dtype=torch.int64)
    acc[1].fill_(0x5A5A5A5A)  # the idle accumulator: the launch must zero it
    for parity in (0, 1):  # the host's two accumulators, in turn
        cur, nxt = acc[parity], acc[1 - parity]
        _core.cuda_scan(0, 0, tables.table.data_ptr(), n, tables.total, cur.data_ptr(), nxt.data_ptr(), n * 6)
        counts, stats = _cuda.split(cur.clone(), n)
        rows = [(*c, *s) for c, s in zip(counts.tolist(), stats.tolist())]
        out[f"mismatches_{parity}"] = planted.mismatches(labels, rows, [planted.reference(t) for t in views])
        out[f"idle_zeroed_{parity}"] = bool((nxt == 0).all())
    # The signature pass through the same host code: the probe that its first-use check runs (over host
    # memory here), against benchsuite.gradscan.signature.
    sviews = signature._sig_probe(torch.device("cpu"))
    stables = _native.TableCache()
    stables.update(sviews)
    sacc = torch.zeros(len(sviews) * 6, dtype=torch.int64)
    sbuckets = torch.zeros((len(sviews), _core.SIG_K), dtype=torch.float64)
    _core.cuda_scan(0, 0, stables.table.data_ptr(), len(sviews), stables.total, sacc.data_ptr(), 0, 0,
                    sbuckets.data_ptr())
    out["sig_worst"] = signature.sig_probe_errors(sviews, sbuckets)
    try:  # a table whose chunk total is off is refused before any launch
        _core.check_table(tables.table.data_ptr(), n, tables.total + 1)
        out["bad_total_refused"] = False
    except RuntimeError as exc:
        out["bad_total_refused"] = "total_chunks" in str(exc)
report = ctypes.CDLL("libcuda.so.1").fake_cuda_report
report.restype = ctypes.c_char_p
out["driver_report"] = report().decode()
print(json.dumps(out))
