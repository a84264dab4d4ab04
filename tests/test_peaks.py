"""The dense bf16 peak table (olmo_exp/build/peaks.py) against figures typed from the vendors'
documents (not copied from the table) and derived again from the architecture: exact device names
map to their figures, look-alike names do not shadow each other, MIG slices, unknown devices and
fp32 runs get no MFU, and the table agrees with olmo-core's own function where it knows the GPU."""

from __future__ import annotations

import pytest

from olmo_exp.build.peaks import PEAK_TFLOPS, mfu_peak, peak_flops_per_second

# What the vendors print, typed from their documents (not from peaks.py), per exact
# torch.cuda.get_device_name() string: (printed bf16 TFLOP/s, how to get one device's dense peak
# from it, source). NVIDIA datasheets print Tensor Core figures "with sparsity" (*): dense is half.
# AMD prints a module's figure; MI250X/MI250 modules hold two dies, each its own torch device.
SPARSE, DENSE, MODULE_OF_TWO = 0.5, 1.0, 0.5
DATASHEETS = {
    "NVIDIA H100 80GB HBM3": (1979, SPARSE, "H100 datasheet, SXM: BF16 Tensor Core 1,979*"),
    "NVIDIA H100 PCIe": (1513, SPARSE, "H100 datasheet, PCIe: 1,513*"),
    "NVIDIA H100 NVL": (1671, SPARSE, "H100 datasheet, NVL: 1,671*"),
    "NVIDIA H800": (1979, SPARSE, "H800 datasheet, SXM: 1,979* (the H100's compute)"),
    "NVIDIA H800 PCIe": (1513, SPARSE, "H800 datasheet, PCIe: 1,513*"),
    "NVIDIA H200": (1979, SPARSE, "H200 datasheet, SXM: 1,979*"),
    "NVIDIA H200 NVL": (1671, SPARSE, "H200 datasheet, NVL: 1,671*"),
    "NVIDIA GH200 480GB": (1979, SPARSE, "GH200 datasheet: 1,979*"),
    "NVIDIA A100-SXM4-80GB": (312, DENSE, "A100 datasheet: BF16 Tensor Core 312 | 624*"),
    "NVIDIA A100-SXM4-40GB": (312, DENSE, "A100 datasheet"),
    "NVIDIA A100-PCIE-40GB": (312, DENSE, "A100 datasheet (PCIe: the same 312)"),
    "NVIDIA A100 80GB PCIe": (312, DENSE, "A100 datasheet"),
    "NVIDIA A800-SXM4-80GB": (312, DENSE, "A800 datasheet: BF16 Tensor Core 312 | 624*"),
    "NVIDIA A800 80GB PCIe": (312, DENSE, "A800 datasheet"),
    "NVIDIA A10": (250, SPARSE, "A10 datasheet: BF16 Tensor Core 125 | 250*"),
    "NVIDIA L40S": (362.05, DENSE, "L40S datasheet: 362.05 | 733* (printed dense; 733 is not 2x)"),
    "NVIDIA L40": (362.1, SPARSE, "L40 datasheet: 181.05 | 362.1*"),
    "NVIDIA L4": (242, SPARSE, "L4 datasheet: BF16 Tensor Core 242*"),
    "NVIDIA GeForce RTX 4090": (165.2, DENSE,
                                "Ada whitepaper: BF16 Tensor with FP32 accumulate 165.2 | 330.4*"),
    "NVIDIA B200": (36000 / 8, SPARSE, "HGX B200 page: 36 PFLOPS FP16/BF16* for 8 GPUs"),
    "NVIDIA B300 SXM6 AC": (36000 / 8, SPARSE, "HGX B300 page: 36 PFLOPS* for 8 GPUs"),
    "NVIDIA GB200": (360000 / 72, SPARSE, "GB200 NVL72 page: 360 PFLOPS* for 72 GPUs"),
    "NVIDIA GB300": (360000 / 72, SPARSE, "GB300 NVL72 page: 360 PFLOPS* for 72 GPUs"),
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": (1008, SPARSE,
                                                     "RTX Blackwell PRO whitepaper: 1,008*"),
    "AMD Instinct MI300X": (1307.4, DENSE, "MI300X datasheet: peak BF16 1307.4 (2614.9 sparse)"),
    "AMD Instinct MI250X": (383.0, MODULE_OF_TWO, "MI250X datasheet: peak BF16 383.0, 2 dies"),
    "AMD Instinct MI250": (362.1, MODULE_OF_TWO, "MI250 datasheet: peak BF16 362.1, 2 dies"),
}
EXPECTED_TFLOPS = {name: printed * factor for name, (printed, factor, _) in DATASHEETS.items()}

# The same peaks derived another way, where the architecture documents give every term: compute
# units x clock x dense bf16 FLOPs per unit per clock. A typo in the table fails one of the two.
ARCHITECTURE = {
    # Hopper whitepaper: H100 SXM5 132 SMs, 1,830 MHz boost, 4 tensor cores x 512 FP16 FMA/clk
    "NVIDIA H100 80GB HBM3": (132, 1830e6, 4096),
    "NVIDIA H800": (132, 1830e6, 4096),  # the same GH100 configuration
    "NVIDIA H200": (132, 1830e6, 4096),
    # Ampere whitepaper: A100 108 SMs, 1,410 MHz boost, 4 tensor cores x 256 FP16 FMA/clk
    "NVIDIA A100-SXM4-80GB": (108, 1410e6, 2048),
    "NVIDIA A800-SXM4-80GB": (108, 1410e6, 2048),
    # CDNA 3 whitepaper: MI300X 304 CUs, 2,100 MHz peak, 2,048 dense FP16/BF16 FLOPs/clk/CU
    "AMD Instinct MI300X": (304, 2100e6, 2048),
    # CDNA 2 whitepaper / ROCm MI250 page: 1,700 MHz, 1,024 BF16 FLOPs/clk/CU; one die has 110
    # CUs (MI250X) or 104 (MI250)
    "AMD Instinct MI250X": (110, 1700e6, 1024),
    "AMD Instinct MI250": (104, 1700e6, 1024),
}


@pytest.mark.parametrize(("name", "tflops"), sorted(EXPECTED_TFLOPS.items()))
def test_known_devices(name: str, tflops: float) -> None:
    assert peak_flops_per_second(name) == pytest.approx(tflops * 1e12, rel=1e-9)


@pytest.mark.parametrize(("name", "terms"), sorted(ARCHITECTURE.items()))
def test_peaks_agree_with_the_architecture(name: str, terms: tuple[int, float, int]) -> None:
    units, clock, flops_per_clock = terms
    # 0.1 %: vendors round their printed figure (989.4 from the clocks, 989.5 printed)
    assert peak_flops_per_second(name) == pytest.approx(units * clock * flops_per_clock, rel=1e-3)


def test_a_name_of_two_parts_is_told_apart_by_its_compute_units() -> None:
    """ROCm calls both MI250X and MI250 "AMD Instinct MI250X / MI250": the CUs of the device
    (110 or 104 per die) decide; other counts give no figure rather than a wrong one."""
    name = "AMD Instinct MI250X / MI250"
    assert peak_flops_per_second(name, compute_units=110) == pytest.approx(
        EXPECTED_TFLOPS["AMD Instinct MI250X"] * 1e12)
    assert peak_flops_per_second(name, compute_units=104) == pytest.approx(
        EXPECTED_TFLOPS["AMD Instinct MI250"] * 1e12)
    assert peak_flops_per_second(name) is None
    assert peak_flops_per_second(name, compute_units=96) is None
    assert mfu_peak(name, bf16=True, override_tflops=None, compute_units=104) == pytest.approx(
        181.05e12)


@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-40GB MIG 3g.20gb",
                                  "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                                  "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                                  "NVIDIA H100 80GB HBM3 MIG 7g.80gb"])
def test_a_mig_slice_never_gets_a_whole_gpus_peak(name: str) -> None:
    assert peak_flops_per_second(name) is None
    assert peak_flops_per_second(name, compute_units=14) is None
    assert mfu_peak(name, bf16=True, override_tflops=None) is None
    assert mfu_peak(name, bf16=True, override_tflops=40.0) == pytest.approx(40e12)  # the user's


@pytest.mark.parametrize(
    ("name", "lookalike"),
    [
        ("NVIDIA A10", "NVIDIA A100-SXM4-80GB"),
        ("NVIDIA L4", "NVIDIA L40S"),
        ("NVIDIA L4", "NVIDIA L40"),
        ("NVIDIA L40", "NVIDIA L40S"),
        ("NVIDIA H100 NVL", "NVIDIA H100 PCIe"),
        ("NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H200 NVL", "NVIDIA H200"),
        ("NVIDIA GB200", "NVIDIA B200"),
        ("NVIDIA GB300", "NVIDIA B300 SXM6 AC"),
        ("NVIDIA H800 PCIe", "NVIDIA H800"),
        ("AMD Instinct MI250", "AMD Instinct MI250X"),
    ],
)
def test_lookalikes_do_not_shadow_each_other(name: str, lookalike: str) -> None:
    # Each name gets its own figure, whichever row comes first in the table.
    assert peak_flops_per_second(name) == pytest.approx(EXPECTED_TFLOPS[name] * 1e12)
    assert peak_flops_per_second(lookalike) == pytest.approx(EXPECTED_TFLOPS[lookalike] * 1e12)
    assert EXPECTED_TFLOPS[name] != EXPECTED_TFLOPS[lookalike]


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA A10G",  # AWS part, lower clocks than the A10
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 3090",
        "Tesla V100-SXM2-16GB",
        "AMD Instinct MI100",
        "",
    ],
)
def test_unknown_device_is_none_not_a100(name: str) -> None:
    assert peak_flops_per_second(name) is None
    assert mfu_peak(name, bf16=True, override_tflops=None) is None


def test_override_wins() -> None:
    assert peak_flops_per_second("NVIDIA H100 80GB HBM3", 500.0) == pytest.approx(500e12)
    assert peak_flops_per_second("some unknown accelerator", 123.5) == pytest.approx(123.5e12)
    assert mfu_peak("NVIDIA L40S", bf16=True, override_tflops=100.0) == pytest.approx(100e12)
    assert mfu_peak("mystery", bf16=True, override_tflops=100.0) == pytest.approx(100e12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_nonpositive_override_is_an_error(bad: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        peak_flops_per_second("NVIDIA H100 80GB HBM3", bad)


def test_mfu_peak_none_for_fp32_and_cpu() -> None:
    assert mfu_peak("NVIDIA H100 80GB HBM3", bf16=False, override_tflops=None) is None
    assert mfu_peak("NVIDIA H100 80GB HBM3", bf16=False, override_tflops=500.0) is None
    assert mfu_peak(None, bf16=True, override_tflops=None) is None
    assert mfu_peak(None, bf16=True, override_tflops=500.0) is None
    assert mfu_peak("NVIDIA H200", bf16=True, override_tflops=None) == pytest.approx(989.5e12)


def test_table_is_well_formed() -> None:
    patterns = [pattern for pattern, _ in PEAK_TFLOPS]
    assert len(patterns) == len(set(patterns))
    assert all(tflops > 0 for _, tflops in PEAK_TFLOPS)


# Every GPU olmo-core 3.0's get_device_peak_flops_per_second has a branch for (plus real A100s,
# its default): our table must give the same number, so the two never drift apart. Its signature
# takes a plain name (no device needed), so we call it directly.
OLMO_CORE_KNOWN = [
    "NVIDIA H100 80GB HBM3",
    "NVIDIA H100 PCIe",
    "NVIDIA H100 NVL",
    "NVIDIA B200",
    "NVIDIA B300 SXM6 AC",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA A100-PCIE-40GB",
]


@pytest.mark.parametrize("name", OLMO_CORE_KNOWN)
def test_agrees_with_olmo_core(name: str) -> None:
    from olmo_core.train.callbacks.speed_monitor import get_device_peak_flops_per_second

    theirs = get_device_peak_flops_per_second(name, using_half_precision=True)
    assert theirs is not None
    assert peak_flops_per_second(name) == pytest.approx(theirs, rel=1e-12)
