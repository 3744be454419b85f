"""scan(): gather trainable parameters' gradients, scan them in one fused pass, build the report."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from . import _cuda, _native, _zero
from ._oracle import tensor_stats
from ._records import ParamRecord, ScanReport, find_problems

# torch's types by name: the aliases are importable (callback.py) without importing torch
Named = Iterable[tuple[str, "torch.Tensor"]]
Source = Union["torch.nn.Module", Mapping[str, "torch.Tensor"], Named]

def named_trainable(source: Source) -> list[tuple[str, torch.Tensor]]:
    """(name, parameter) pairs with requires_grad=True from a module, a mapping or pairs."""
    import torch
    pairs: list[tuple[str, torch.Tensor]]
    if isinstance(source, torch.nn.Module):
        pairs = list(source.named_parameters())
    elif isinstance(source, Mapping):
        pairs = list(source.items())
    else:
        pairs = []
        for i, item in enumerate(source):
            if isinstance(item, torch.Tensor):
                pairs.append((f"param{i}", item))
            else:
                name, tensor = item
                pairs.append((str(name), tensor))
    return [(n, p) for n, p in pairs if isinstance(p, torch.Tensor) and p.requires_grad]


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def _dense_view(name: str, g: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """(tensor to scan, implicit zeros it leaves out, whether the native core can read it).

    Sparse gradients are scanned through their coalesced values (the rest are zeros); integer and
    other floating types go to the torch path; a non-contiguous tensor is scanned as one span when it
    is a permutation of a dense block, else through a contiguous copy.
    """
    import torch
    if g.is_complex():
        raise ValueError(
            f"parameter {name!r} has a complex gradient ({g.dtype}); the scanner reads real floating-point "
            "gradients: scan torch.view_as_real(grad) instead")
    if g.device.type == "meta":
        raise ValueError(f"parameter {name!r} has its gradient on the meta device: there is no data to scan")
    implicit_zeros = 0
    if g.layout == torch.sparse_coo:
        g = g.coalesce()
        values = g.values()
        implicit_zeros = g.numel() - values.numel()
        g = values
    elif g.layout != torch.strided:
        g = g.to_dense()
    if g.dtype not in _native.dtype_codes():
        return g, implicit_zeros, False
    if not g.is_contiguous():
        # A permuted but dense tensor occupies one contiguous span: statistics ignore element order.
        if not _dense_permutation(g):
            g = g.contiguous()
        elif g.numel() > 0:
            g = g.as_strided((g.numel(),), (1,))
    return g, implicit_zeros, True


def _dense_permutation(t: torch.Tensor) -> bool:
    """True when the tensor's elements fill one gap-free span (a permutation of a contiguous tensor)."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


@dataclass
class Pending:
    """A launched scan: results may still be on their way from the device."""

    records: list[ParamRecord]
    # (indices into records, counts, stats, implicit zeros per index, keep-alive)
    parts: list[tuple[list[int], torch.Tensor, torch.Tensor, list[int], object]] = field(default_factory=list)
    backend: str = "torch"
    step: int | None = None
    events: list = field(default_factory=list)  # one per CUDA device whose results are being copied

    def finish(self) -> ScanReport:
        for event in self.events:
            event.synchronize()
        self.events = []
        records = self.records
        for idx, counts, stats, implicit, _ in self.parts:
            c = counts.tolist()
            s = stats.tolist()
            for j, i in enumerate(idx):
                r = records[i]
                r.nan, r.posinf, r.neginf, r.zero = c[j]
                if implicit[j]:
                    r.zero += implicit[j]
                r.sumsq, r.absmax = s[j]
        self.parts = []
        return ScanReport(records, self.backend, step=self.step)


_DEVICE_NAMES: dict[torch.device, str] = {}
_DEVICE_BY_INDEX: dict[int, str] = {-1: "cpu"}


def _device_name(device: torch.device) -> str:
    name = _DEVICE_NAMES.get(device)
    if name is None:
        name = _DEVICE_NAMES[device] = str(device)
        if device.type == "cuda" and device.index is not None:
            _DEVICE_BY_INDEX[device.index] = name
    return name


def launch(pairs: Sequence[tuple[str, Any]], *, backend: str = "auto", grads: bool = True,
           expected_zero: set[str] | None = None, step: int | None = None, asynchronous: bool = False,
           num_threads: int | None = None) -> Pending:
    """Start scanning; with grads=True the tensors' ``.grad`` are scanned, else the tensors themselves.
    ``pairs``: (name, tensor or None); with grads=True anything with a ``.grad`` will do (``_Value``).

    On CUDA nothing here waits for the GPU: the kernel and the copy of its results back to pinned host
    memory are enqueued on each device's current stream (with ``asynchronous``, an event per device
    marks when they land; ``finish`` waits on those events only)."""
    import torch
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', not {backend!r}")
    use_native = backend != "torch" and _native.available()
    if backend == "native" and not _native.available():
        raise RuntimeError(f"benchsuite._core is not available ({_native.IMPORT_ERROR}); reinstall benchsuite "
                           "with a C++ compiler, or pass backend='torch'")
    if backend == "auto" and not _native.available():
        _native.warn_once("core", f"benchsuite._core is not available ({_native.IMPORT_ERROR}); "
                                  "using the pure-torch scanner (same results, slower)")
    expected_zero = expected_zero or set()
    records: list[ParamRecord] = []
    # Dense gradients the core reads, by device index (-1: the CPU), then everything else by device.
    fast: dict[int, list[tuple[int, torch.Tensor, int]]] = {}
    groups: dict[torch.device, list[tuple[int, torch.Tensor, int]]] = {}
    codes = _native.dtype_codes()
    dtype_names = _DTYPE_NAMES
    strided = torch.strided
    for name, t in pairs:
        g = (t.grad if t is not None else None) if grads else t
        if g is None:
            src = t
            records.append(ParamRecord(name, _dtype_name(src.dtype) if src is not None else "unknown",
                                       src.numel() if src is not None else 0, True, 0, 0, 0, 0, 0.0, 0.0,
                                       _device_name(src.device) if src is not None else "cpu",
                                       name in expected_zero))
            continue
        dtype = g.dtype
        where = g.get_device()  # -1 on the CPU; an int costs less than a torch.device
        records.append(ParamRecord(name, dtype_names.get(dtype) or _dtype_name(dtype), g.numel(), False, 0, 0, 0, 0,
                                   0.0, 0.0, _DEVICE_BY_INDEX.get(where) or _device_name(g.device),
                                   name in expected_zero))
        # The common case first: a dense, contiguous gradient of a dtype the core reads, on the CPU or CUDA.
        on_device = g.is_cuda if where >= 0 else g.is_cpu
        if use_native and dtype in codes and g.layout is strided and g.is_contiguous() and on_device:
            fast.setdefault(where, []).append((len(records) - 1, g, 0))
            continue
        dense, implicit, readable = _dense_view(name, g.detach())
        if not (readable and use_native):
            rec = records[-1]
            rec.nan, rec.posinf, rec.neginf, rec.zero, rec.sumsq, rec.absmax = tensor_stats(dense)
            rec.zero += implicit
            continue
        groups.setdefault(dense.device, []).append((len(records) - 1, dense, implicit))
    for where, items in fast.items():
        device = torch.device("cpu") if where < 0 else torch.device("cuda", where)
        groups.setdefault(device, []).extend(items)

    pending = Pending(records, step=step)
    used = set()
    for device, items in groups.items():
        if device.type == "cpu":
            idx = [i for i, _, _ in items]
            tensors = [d for _, d, _ in items]
            counts, stats = _native.scan_cpu(tensors, num_threads)
            pending.parts.append((idx, counts, stats, [z for _, _, z in items], tensors))
            used.add("cpu")
        elif device.type == "cuda" and _native.available() and _launch_cuda(pending, device, items, asynchronous):
            used.add("cuda")
        else:
            # Other devices (mps, xpu), or a CUDA device where the kernel is not usable: torch computes the
            # same statistics.
            _torch_fill(records, items)
    pending.backend = "cuda" if "cuda" in used else ("cpu" if "cpu" in used else "torch")
    return pending


def _launch_cuda(pending: Pending, device: torch.device, items: list[tuple[int, torch.Tensor, int]],
                 asynchronous: bool) -> bool:
    """Enqueue the kernel over ``items`` on ``device`` and the copy of its results; False when the
    kernel is not usable there (the reason was said once)."""
    import torch
    index = device.index if device.index is not None else torch.cuda.current_device()
    if not _cuda.device_state(index).ready:
        return False
    live = [it for it in items if it[1].numel()]
    if not live:
        _torch_fill(pending.records, items)
        return True
    try:
        words = _cuda.launch([d for _, d, _ in live], device)
    except RuntimeError as exc:
        _native.warn_once("cuda", f"benchsuite: the CUDA scan kernel failed on cuda:{index} "
                                  f"({str(exc).replace('benchsuite._core: ', '')}); using torch's scanner there")
        return False
    with torch.cuda.device(index):
        host = torch.empty(words.numel(), dtype=torch.int64, pin_memory=True)
        host.copy_(words, non_blocking=True)
        event = torch.cuda.Event()
        event.record()  # on this device's current stream, after the copy
    pending.events.append(event)
    counts, stats = _cuda.split(host, len(live))
    _torch_fill(pending.records, [it for it in items if not it[1].numel()])
    pending.parts.append(([i for i, _, _ in live], counts, stats, [z for _, _, z in live], [d for _, d, _ in live]))
    return True


def _torch_fill(records: list[ParamRecord], items: list[tuple[int, torch.Tensor, int]]) -> None:
    for i, dense, implicit in items:
        r = records[i]
        r.nan, r.posinf, r.neginf, r.zero, r.sumsq, r.absmax = tensor_stats(dense)
        r.zero += implicit


def scan(source: Source, *, backend: str = "auto", step: int | None = None,
         num_threads: int | None = None) -> ScanReport:
    """Scan the gradients of every trainable parameter of ``source`` (a module, a mapping or name/param pairs).

    One fused pass over all gradient buffers reports, per parameter, whether ``.grad`` is None, the
    counts of NaN, +Inf, -Inf and exact zeros, the sum of squares and the max |x| of the finite values.
    ``backend``: "auto" (native core when built, else torch), "native" or "torch".
    """
    import torch
    pairs = named_trainable(source)
    report = launch(pairs, backend=backend, step=step, num_threads=num_threads).finish()
    mark_expected_zero(report, pairs, source if isinstance(source, torch.nn.Module) else None)
    return report


def mark_expected_zero(report: ScanReport, pairs: list[tuple[str, torch.Tensor]],
                       module: torch.nn.Module | None = None, *, groups: list | None = None,
                       bias_pairs: dict[str, str] | None = None, all_zero=None) -> set[str]:
    """Mark the records whose all-zero gradient the parameters' state explains (see ``_zero``: a factor
    whose partner factor is all zero; with a module, also a bias whose layer's weight gets a gradient),
    recompute the report's problems, and return the names excused. ``groups`` and ``bias_pairs``: the
    module's factor groups and bias/weight pairs when the caller keeps them between scans. ``all_zero``:
    whether each of a list of partner tensors is all zero, when the caller scanned their values already
    (default: one fused scan of them now)."""
    zero = {r.name for r in report.records if r.all_zero}
    if not zero:
        return set()
    if groups is None:
        groups = _zero.factor_groups(module) if module is not None else _zero.name_groups(pairs)
    excused = _zero.explained_zero(zero, groups, all_zero or _all_zero)
    biases = bias_pairs if bias_pairs is not None else module
    if biases is not None:
        signal = {r.name for r in report.records if not r.none and not r.all_zero and not r.nonfinite}
        excused |= _zero.shift_invariant_biases(zero - excused, biases, signal)
    for r in report.records:
        r.expected_zero = r.name in excused
    report.problems = find_problems(report.records)
    return excused


def _all_zero(tensors: list[torch.Tensor]) -> list[bool]:
    """Whether each tensor is entirely zero, from one fused scan of the values."""
    return [r.numel == r.zero for r in scan_tensors([(str(i), t) for i, t in enumerate(tensors)])]


def scan_tensors(tensors: Mapping[str, torch.Tensor] | Iterable[torch.Tensor | tuple[str, torch.Tensor]], *,
                 backend: str = "auto", num_threads: int | None = None) -> ScanReport:
    """Scan the tensors themselves (not their gradients): benchmarks and tests use this."""
    import torch
    if isinstance(tensors, Mapping):
        pairs = list(tensors.items())
    else:
        pairs = [(f"t{i}", t) if isinstance(t, torch.Tensor) else (str(t[0]), t[1]) for i, t in enumerate(tensors)]
    return launch(pairs, backend=backend, grads=False, num_threads=num_threads).finish()


class _Value:
    """Presents a tensor's values where ``launch`` reads a gradient, so values ride in the same pass."""

    __slots__ = ("grad",)

    def __init__(self, t: torch.Tensor):
        self.grad = t.detach()


class AsyncScanner:
    """Scans without stalling the training loop: step N's scan is launched and read at step N+1.

    >>> scanner = AsyncScanner(model)
    >>> loss.backward(); previous = scanner.step(); optimizer.step()   # previous: report of step N-1
    >>> last = scanner.flush()

    On CUDA the kernel and the copy of its results run on the current stream; reading them one step
    later finds them done, so no step waits for the scan. On the CPU the scan itself runs at launch.
    Whether an all-zero gradient is zero by construction (a factor whose partner factor is all zero) is
    decided from the partner factors' values, scanned in the same pass and read with the rest: no step
    waits for a device-to-host copy of its own.
    """

    def __init__(self, source: Source, backend: str = "auto"):
        self.source = source
        self.backend = backend
        self._pending: Pending | None = None
        self._meta: tuple | None = None
        self._structure: tuple | None = None
        self._count = 0

    def _groups(self, module: torch.nn.Module | None, pairs: list) -> tuple[list, dict | None]:
        """The factor groups and bias/weight pairs, found once per set of trainable parameters."""
        key = (id(module), len(pairs))
        if self._structure is None or self._structure[0] != key:
            groups = _zero.factor_groups(module) if module is not None else _zero.name_groups(pairs)
            biases = _zero.bias_weight_pairs(module) if module is not None else None
            self._structure = (key, groups, biases)
        return self._structure[1], self._structure[2]

    def launch(self, step: int | None = None) -> None:
        import torch
        pairs = named_trainable(self.source)
        module = self.source if isinstance(self.source, torch.nn.Module) else None
        groups, biases = self._groups(module, pairs)
        partners = list({id(p): p for g in groups for _, p in g}.values())
        values = [(f"value{i}", _Value(p)) for i, p in enumerate(partners)]
        self._pending = launch(pairs + values, backend=self.backend, step=self._count if step is None else step,
                               asynchronous=True)
        self._meta = (pairs, module, groups, biases, partners)
        self._count += 1

    def step(self, step: int | None = None) -> ScanReport | None:
        """Launch this step's scan and return the previous step's report (None at the first call)."""
        previous = self.flush()
        self.launch(step)
        return previous

    def flush(self) -> ScanReport | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        assert self._meta is not None  # set with _pending by launch()
        pairs, module, groups, biases, partners = self._meta
        report = pending.finish()
        n = len(pairs)
        # The partners' values as they were when the gradients were scanned (before the optimizer step).
        zero_at = {p.data_ptr(): r.numel == r.zero for p, r in zip(partners, report.records[n:])}
        report.records = report.records[:n]
        report.problems = find_problems(report.records)
        mark_expected_zero(report, pairs, module, groups=groups, bias_pairs=biases,
                           all_zero=lambda tensors: [zero_at.get(t.data_ptr(), False) for t in tensors])
        return report
