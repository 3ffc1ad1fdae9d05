"""aarch64 on `qemu-system-aarch64 -machine virt`, CPUs cortex-a57 and max
(guests/aarch64/README.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from arch import MappingFlags, RamImage
from arch.aarch64 import A64PageTable
from arch.aarch64.permissions import (
    FSC_ALIGNMENT,
    FSC_TRANSLATION,
    OPTION_PAN,
    OPTION_WXN,
    A64Permissions,
    describe_esr,
)

from ..build import GuestImage
from ..profile import Comparison, Deviation, OptionSet, Profile, RamLayout, Variant
from ..tableset import TableSet

RAM_BASE = 0x4000_0000  # virt: RAM at 0x4000_0000 (QEMU-NOTES "AArch64")
RAM_SIZE = 2 << 30  # 2 GiB: [0x8000_0000, 0xC000_0000) is a 1G-aligned frame for 1G blocks
RAM_END = RAM_BASE + RAM_SIZE
BRK_TAG = 0xD420_F4E0  # brk #0x7a7, the AArch64 tag trap (guests/ABI.md)
# Probe and result arrays: 40 MiB = 1,048,576 probes of 8 + 32 bytes, 2M-aligned so the guest
# mapping of them takes 20 level-2 blocks.
ARRAYS = (0x4020_0000, 0x42A0_0000)
TABLE_POOL = (0x42A0_0000, 0x4800_0000)  # 22,016 table frames
DATA_WINDOW = (0x4800_0000, RAM_END)
# Physical ranges where virt has nothing, so an access there ends in a bus error (a synchronous
# External abort): between the end of RAM and the high-memory device regions, which virt puts
# at 256 GiB (redistributors, PCIe ECAM) up to the end of the 512 GiB high PCIe MMIO window at
# 1 TiB (QEMU hw/arm/virt.c, `virt_set_high_memmap`, with no memory hotplug slots).
NO_DEVICE = ((RAM_END, 0x40_0000_0000), (0x100_0000_0000, 1 << 48))

# CPU facts (QEMU-NOTES "AArch64"; guest README "mode and options"): the output size the guest's
# TCR_EL1.IPS gives (min(PARange, 48 bits)) and whether FEAT_PAN exists.
CPUS = {
    "cortex-a57": (44, False),
    "max": (48, True),  # PARange is 52 bits, but 4K descriptors without DS hold 48-bit addresses
}

R, W, X, U = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER


def no_device(paddrs: np.ndarray) -> np.ndarray:
    """Whether each physical address hits no device or RAM on virt (see NO_DEVICE)."""
    hit = np.zeros(len(paddrs), dtype=bool)
    for start, end in NO_DEVICE:
        hit |= (paddrs >= np.uint64(start)) & (paddrs < np.uint64(end))
    return hit


def _level0_block_accepted(c: Comparison) -> np.ndarray:
    """Probes predicted to take a level 0 Translation fault in the TTBR0 or TTBR1 range: the only
    level 0 faults there that QEMU < 8.2 can miss are those at a level 0 block descriptor."""
    top = c.vaddrs >> np.uint64(48)
    in_range = (top == 0) | (top == 0xFFFF)
    level0 = (c.predicted.cause & np.uint64(0x3F)) == FSC_TRANSLATION
    return np.asarray(~c.predicted.ok & level0 & in_range, dtype=bool)


def _unaligned_device_allowed(c: Comparison) -> np.ndarray:
    """Probes predicted to take an Alignment fault (unaligned Device access) that completed."""
    alignment = (c.predicted.cause & np.uint64(0x3F)) == FSC_ALIGNMENT
    return np.asarray(~c.predicted.ok & alignment & c.observed_ok, dtype=bool)


DEVIATIONS = [
    Deviation(
        key="aarch64-level0-block",
        summary="a level 0 descriptor with bits[1:0] = 0b01 is used as a 512 GiB block; the "
        "architecture (4K granule, TCR_EL1.DS = 0) gives a level 0 Translation fault",
        reference="QEMU-NOTES 'QEMU 7.2 defects'; fixed by QEMU commit 'target/arm/ptw: Check for "
        "block descriptors at invalid levels' (8.2); 10.0.2 faults correctly (measured: "
        "tests/harness/test_aarch64_conformance.py::test_hand_written_descriptors)",
        versions=("0", "8.2"),
        explains=_level0_block_accepted,
    ),
    Deviation(
        key="aarch64-unaligned-device",
        summary="an unaligned load or store to Device memory completes; the architecture raises an "
        "Alignment fault (the ABI's probes are 8-byte aligned, so only hand-made probes meet it)",
        reference="QEMU-NOTES 'QEMU 7.2 defects'; still present in 10.0.2 on cortex-a57 and max (an "
        "8-byte LDR/STR at offset 4 of a Device-nGnRE page completes: tests/harness/"
        "test_aarch64_conformance.py::test_unaligned_device_access_deviation_matches_this_qemu), "
        "although QEMU 9.0 added memory-type alignment checks",
        versions=("0", ""),
        explains=_unaligned_device_allowed,
    ),
]


def _tables(ram: RamImage) -> TableSet:
    """TTBR0_EL1 (lower range) and TTBR1_EL1 (upper range) tables: root0 and root1."""
    return TableSet([A64PageTable(ram), A64PageTable(ram, upper=True)])


def _variant(cpu: str) -> Variant:
    pa_bits, pan = CPUS[cpu]
    return Variant(
        cpu, _tables, 0, ("-cpu", cpu),
        description=f"-cpu {cpu}: {pa_bits}-bit output addresses, {'with' if pan else 'no'} FEAT_PAN",
    )


def _model(variant: Variant) -> A64Permissions:
    pa_bits, _ = CPUS[variant.name]
    # QEMU's choice for the CONSTRAINED UNPREDICTABLE fetch from Device memory is to fetch it as
    # Normal memory (measured on 10.0.2, both CPUs, EL1 and EL0: test_hand_written_descriptors)
    return A64Permissions(pa_bits, fetch_from_device_faults=False, external_abort=no_device)


@dataclass
class Aarch64Profile(Profile):
    """EL1 and EL0 probes, with PAN and WXN, through the TTBR0 and TTBR1 tables.

    `cpu` names the variant the option sets are for: PAN exists only on CPUs with FEAT_PAN, and
    the guest rejects a PAN batch elsewhere. Empty: the option sets every CPU supports."""

    cpu: str = ""

    def for_variant(self, name: str) -> Aarch64Profile:
        """This profile with the option sets of CPU `name`."""
        if name not in CPUS:
            raise ValueError(f"aarch64 has no CPU variant {name!r}: choose from {', '.join(CPUS)}")
        return dataclasses.replace(self, cpu=name)

    def option_sets(self, full: bool, variant: Variant | None = None) -> list[OptionSet]:
        if not full:
            return [OptionSet("EL1", 0)]
        sets = [
            OptionSet("EL1", 0),
            OptionSet("EL0", 1),
            OptionSet("EL1+WXN", OPTION_WXN),
            OptionSet("EL0+WXN", 1 | OPTION_WXN),
        ]
        cpu = variant.name if variant is not None else self.cpu
        if cpu and CPUS[cpu][1]:  # PAN is ignored at EL0 (guest README), so EL1 sets only
            sets += [OptionSet("EL1+PAN", OPTION_PAN), OptionSet("EL1+PAN+WXN", OPTION_PAN | OPTION_WXN)]
        return sets

    def guest_mappings(self, image: GuestImage, option_set: OptionSet) -> list[tuple[int, int, int, MappingFlags]]:
        """Identity mappings in the TTBR0 table (guest README "What the harness must map"): the EL1
        code never EL0-writable nor PXN, the probe loop executable at the probing EL, the mailbox
        and the arrays writable at the probing EL (never EL0-accessible in EL1 batches, for PAN);
        the code is never writable (for WXN)."""
        user = U if option_set.user else MappingFlags(0)
        ranges = [
            ("ptc_aarch64_el1_text", "ptc_aarch64_el1_text_end", R | X),
            ("ptc_aarch64_probe_text", "ptc_aarch64_probe_text_end", R | X | user),
            ("ptc_aarch64_data", "ptc_aarch64_data_end", R | W | user),
        ]
        found = [(image.symbol(start), image.symbol(end), flags) for start, end, flags in ranges]
        found.append((*ARRAYS, R | W | user))  # probes are read, results written
        return [(start, start, end - start, flags) for start, end, flags in found]

    def reserved_ranges(self, image: GuestImage) -> list[tuple[int, int]]:
        """The identity-mapped guest image and probe/result arrays."""
        return [(image.symbol("ptc_image_start"), image.symbol("ptc_image_end")), ARRAYS]

    def non_canonical_addresses(self, va_bits: int) -> list[int]:
        """Addresses in neither VA range (TBI = 0: the top byte counts): just above TTBR0's range,
        just below TTBR1's, a tagged-pointer-like address and two far off."""
        return [1 << va_bits, (1 << 64) - (1 << va_bits) - 8, 0x0F00_0000_DEAD_B000,
                0x8000_0000_0000_0000, 0x5555_5555_5555_5550]

    def explain_cause(self, cause: int) -> str:
        return describe_esr(cause)


def aarch64_profile() -> Aarch64Profile:
    """The aarch64 profile (option sets common to both CPUs; see `Aarch64Profile.for_variant`)."""
    return Aarch64Profile(
        arch="aarch64",
        binary="qemu-system-aarch64",
        apt_package="qemu-system-arm",
        # the guest starts at EL1h without firmware, DTB or devices (guest README "Run"); virt
        # refuses a RAM backend larger than its default -m ("maxmem/slots too huge"), so -m is given
        machine_args=("-machine", "virt", "-smp", "1", "-m", f"{RAM_SIZE >> 20}M", "-nodefaults"),
        ram_base=RAM_BASE,
        ram_size=RAM_SIZE,
        # Armv8.0 instructions only, so one ELF runs on both CPUs (guest README "Build")
        zig_args=("-target", "aarch64-freestanding-none", "-mcpu=cortex_a57"),
        layout=RamLayout(arrays=ARRAYS, table_pool=TABLE_POOL, data_window=DATA_WINDOW),
        variants={cpu: _variant(cpu) for cpu in CPUS},
        trap_instruction=BRK_TAG,
        model_for=_model,
        deviations=list(DEVIATIONS),
    )
