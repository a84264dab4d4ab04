"""The dense bf16 peak table (olmo_exp/build/peaks.py): exact device names map to their figures,
look-alike names do not shadow each other, unknown devices and fp32 runs get no MFU, and the table
agrees with olmo-core's own function wherever olmo-core knows the GPU."""

from __future__ import annotations

import pytest

from olmo_exp.build.peaks import PEAK_TFLOPS, mfu_peak, peak_flops_per_second

# Exact torch.cuda.get_device_name() strings -> dense bf16 TFLOP/s (vendor datasheets; see peaks.py).
EXPECTED_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.5,  # H100 SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.5,  # H200 SXM
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA GH200 480GB": 989.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A10": 125.0,
    "NVIDIA L40S": 362.05,
    "NVIDIA L40": 181.05,
    "NVIDIA L4": 121.0,
    "NVIDIA GeForce RTX 4090": 165.2,
    "NVIDIA B200": 2250.0,
    "NVIDIA B300 SXM6 AC": 2250.0,
    "NVIDIA GB200": 2500.0,
    "NVIDIA GB300": 2500.0,
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": 504.0,
    "AMD Instinct MI300X": 1307.4,
    "AMD Instinct MI250X": 191.5,  # one GCD, which is one torch device
}


@pytest.mark.parametrize(("name", "tflops"), sorted(EXPECTED_TFLOPS.items()))
def test_known_devices(name: str, tflops: float) -> None:
    assert peak_flops_per_second(name) == pytest.approx(tflops * 1e12, rel=1e-12)


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
