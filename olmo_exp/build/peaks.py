"""Dense bf16 peak FLOP/s per GPU, the denominator of MFU.

olmo-core 3.0's ``get_device_peak_flops_per_second`` knows H100, B200/B300 and RTX PRO 6000 and
calls every other GPU an A100 (312 TFLOP/s), so an L40S, H200 or MI300X run reports a wrong MFU
(and a MIG slice gets a whole GPU's figure).
This table covers the GPUs we run on and says *unknown* (``None``) for the rest: no MFU is better
than a wrong one. The caller passes the result to ``SpeedMonitorCallback(
device_peak_flops_per_second=...)``, which overrides olmo-core's guess.

Every figure is the vendor's DENSE (no 2:4 structured sparsity) bf16 tensor-core peak for one
device as ``torch.cuda.get_device_name()`` sees it, in TFLOP/s. NVIDIA datasheets list the sparse
figure with an asterisk; the dense one is half of it. Where olmo-core has a figure for the same GPU
we use the same number (a test checks that the two tables agree), so MFU does not change when a
device moves from one table to the other.

Pure python: no torch import, so config checks and tests can use it without a GPU.
"""

from __future__ import annotations

import re

# (regex, dense bf16 TFLOP/s), matched with re.search (case-insensitive) against
# torch.cuda.get_device_name(); the FIRST match wins. Word boundaries keep look-alike names apart:
# r"\bA10\b" does not match "A100" or "A10G", r"\bL4\b" not "L40"/"L40S", r"\bH200\b" not "GH200",
# r"\bB200\b" not "GB200"; the NVL/PCIe rows of a family come before its catch-all row.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    # --- NVIDIA Blackwell ---
    # GB200 / GB300 (Grace Blackwell, 1.2 kW/1.4 kW per GPU): GB200 NVL72 and GB300 NVL72 pages
    # list FP16/BF16 Tensor Core 360 PFLOPS (sparse) for 72 GPUs = 5 PF/GPU sparse -> 2500 dense.
    # olmo-core has no GB200 row; its substring test "B200" in "NVIDIA GB200" lends it the HGX
    # B200 figure (2250). We use the GB200's own figure and do not match GB300 to B300 either.
    (r"\bGB200\b", 2500.0),
    (r"\bGB300\b", 2500.0),
    # B200 / B300 (HGX, 1 kW): nvidia.com/en-us/data-center/hgx "36 PFLOPS FP16/BF16" for 8 GPUs
    # (sparse) -> 4.5 PF sparse, 2250 dense per GPU. Same figure and source as olmo-core 3.0.0.
    (r"\bB200\b", 2250.0),
    (r"\bB300\b", 2250.0),
    # RTX PRO 6000 Blackwell (Server / Workstation Edition): NVIDIA RTX Blackwell PRO GPU
    # Architecture whitepaper v1.0, 1008 TFLOPS FP16/BF16 (sparse) -> 504 dense. Same as
    # olmo-core. The Max-Q Workstation Edition runs at lower clocks, so its true peak is lower;
    # olmo-core uses 504 for it too and we keep that for agreement (override it if you care).
    (r"\bRTX PRO 6000\b", 504.0),
    # --- NVIDIA Hopper ---
    # GH200 ("NVIDIA GH200 480GB", "NVIDIA GH200 144G HBM3e"): GH200 Grace Hopper Superchip
    # datasheet, FP16/BF16 Tensor Core 1,979 TFLOPS (sparse) -> 989.5, same as H100 SXM (same
    # GH100 GPU, 132 SMs). Listed before H200: "GH200" contains "H200".
    (r"\bGH200\b", 989.5),
    # H200 NVL (PCIe card, 600 W): H200 datasheet/product page, BF16 1,671 TFLOPS sparse -> 835.5.
    (r"\bH200 NVL\b", 835.5),
    # H200 SXM ("NVIDIA H200"): H200 datasheet, BF16 1,979 TFLOPS sparse -> 989.5 (same compute as
    # H100 SXM; only the memory changed).
    (r"\bH200\b", 989.5),
    # H100 NVL / PCIe / SXM: nvidia.com/en-us/data-center/h100 datasheet, BF16 Tensor Core
    # 1,671 / 1,513 / 1,979 TFLOPS sparse -> 835.5 / 756.5 / 989.5 dense; exactly olmo-core's
    # numbers (it halves the same datasheet figures). The Hopper whitepaper's H100 SXM5 figure is
    # 989.4 (from the boost clock), the datasheet rounds to 1,979/2 = 989.5; we take the datasheet
    # value so we agree with olmo-core to the FLOP. Any other H100 ("NVIDIA H100 80GB HBM3" is the
    # SXM5 card) takes the SXM figure, as in olmo-core.
    (r"\bH100 NVL\b", 835.5),
    (r"\bH100 PCIe\b", 756.5),
    (r"\bH100\b", 989.5),
    # H800 (the H100 made for export, same GH100 die, SMs and clocks; NVLink and FP64 cut): H800
    # datasheet, BF16 Tensor Core 1,979 (SXM) / 1,513 (PCIe) TFLOPS sparse -> 989.5 / 756.5.
    (r"\bH800 PCIe\b", 756.5),
    (r"\bH800\b", 989.5),
    # --- NVIDIA Ampere ---
    # A100, every variant ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA
    # A100-PCIE-40GB", "NVIDIA A100 80GB PCIe"): A100 datasheet, BF16 Tensor Core 312 TFLOPS dense
    # (624 sparse) for both SXM and PCIe. Also olmo-core's default.
    (r"\bA100\b", 312.0),
    # A800 (the A100 made for export, NVLink cut; "NVIDIA A800-SXM4-80GB", "NVIDIA A800 80GB
    # PCIe"): A800 datasheet, BF16 Tensor Core 312 TFLOPS dense (624 sparse), as the A100.
    (r"\bA800\b", 312.0),
    # A10 ("NVIDIA A10"): A10 datasheet, BF16 Tensor Core 125 TFLOPS dense (250 sparse). The AWS
    # "NVIDIA A10G" is a different, lower-clocked part and is deliberately NOT matched.
    (r"\bA10\b", 125.0),
    # --- NVIDIA Ada Lovelace ---
    # L40S: L40S datasheet, BF16 Tensor Core 362.05 TFLOPS dense (733 sparse).
    (r"\bL40S\b", 362.05),
    # L40: L40 datasheet, BF16 Tensor Core 181.05 TFLOPS dense (362.1 sparse). Listed so that an
    # L40 is never read as an L4 or L40S.
    (r"\bL40\b", 181.05),
    # L4: L4 datasheet, BF16 Tensor Core 242 TFLOPS sparse -> 121 dense.
    (r"\bL4\b", 121.0),
    # GeForce RTX 4090 ("NVIDIA GeForce RTX 4090"): NVIDIA Ada GPU Architecture whitepaper, Peak
    # BF16 Tensor TFLOPS with FP32 Accumulate 165.2 dense (330.4 sparse). GeForce cards run bf16
    # with FP32 accumulate (what PyTorch matmuls use) at this rate; the 330.3 "FP16 accumulate"
    # figure does not apply to bf16 training. Anchored at the end so the RTX 4090 D and the
    # laptop GPU (different parts) stay unknown.
    (r"\bRTX 4090\s*$", 165.2),
    # --- AMD Instinct (ROCm builds of torch report "AMD Instinct ...") ---
    # MI300X: AMD Instinct MI300X datasheet, peak BF16 1307.4 TFLOPS dense (2614.9 sparse).
    (r"\bMI300X\b", 1307.4),
    # MI250X: the datasheet's 383 TFLOPS peak BF16 is for the whole OAM module, which holds TWO
    # graphics compute dies, and ROCm shows each die as its own torch device (8 devices on a
    # 4-module node). MFU is per device, so the figure here is one die's: 383 / 2 = 191.5.
    # Using 383 would halve the reported MFU.
    (r"\bMI250X\b", 191.5),
    # MI250: datasheet, peak BF16 362.1 TFLOPS for the module of two dies (208 CUs, 104 per
    # die, at 1.7 GHz; the MI250X has 220): one die = one device, 181.05.
    (r"\bMI250\b", 181.05),
)

# Names that stand for more than one part, told apart by the compute units torch reports per
# device (``torch.cuda.get_device_properties(i).multi_processor_count``: CUs on ROCm, SMs on
# CUDA). ROCm names both MI250X and MI250 "AMD Instinct MI250X / MI250": one die of an MI250X has
# 110 CUs (191.5, above), one of an MI250 104 (181.05). Other counts: unknown.
BY_COMPUTE_UNITS: tuple[tuple[str, dict[int, float]], ...] = (
    (r"\bMI250X\s*/\s*MI250\b", {110: 191.5, 104: 181.05}),
)

# A MIG slice ("NVIDIA A100-SXM4-40GB MIG 3g.20gb") has a fraction of the GPU's SMs: the
# full GPU's peak would understate its MFU by up to 7x. No figure (set train.peak_tflops).
MIG_SLICE = re.compile(r"\bMIG\s+\d+g\.", re.IGNORECASE)

_COMPILED: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), tflops) for pattern, tflops in PEAK_TFLOPS
)


_BY_UNITS = tuple((re.compile(p, re.IGNORECASE), units) for p, units in BY_COMPUTE_UNITS)


def peak_tflops(device_name: str, compute_units: int | None = None) -> float | None:
    """The table's dense bf16 TFLOP/s for ``device_name``, or ``None`` if no row matches, for a
    MIG slice, and for a name of several parts whose ``compute_units`` tell none of them."""
    if MIG_SLICE.search(device_name):
        return None
    for pattern, by_units in _BY_UNITS:
        if pattern.search(device_name):
            return None if compute_units is None else by_units.get(int(compute_units))
    for pattern, tflops in _COMPILED:
        if pattern.search(device_name):
            return tflops
    return None


def peak_flops_per_second(device_name: str, override_tflops: float | None = None,
                          compute_units: int | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of one device.

    ``override_tflops`` (TFLOP/s, e.g. from the config) wins over the table. An unknown device
    gives ``None``, never the A100 figure: the caller then reports no MFU rather than a wrong one.
    """
    if override_tflops is not None:
        if not override_tflops > 0:  # also rejects NaN
            raise ValueError(f"peak TFLOP/s override must be positive, got {override_tflops!r}")
        return float(override_tflops) * 1e12
    tflops = peak_tflops(device_name, compute_units)
    return None if tflops is None else tflops * 1e12


def mfu_peak(device_name: str | None, *, bf16: bool, override_tflops: float | None,
             compute_units: int | None = None) -> float | None:
    """The MFU denominator for a run, or ``None`` when MFU is not reported.

    ``None`` for a run that is not bf16 (the table holds bf16 peaks; fp32 has no MFU) and on CPU
    (``device_name`` is ``None``); otherwise :func:`peak_flops_per_second`.
    """
    if not bf16 or device_name is None:
        return None
    return peak_flops_per_second(device_name, override_tflops, compute_units)
