"""riscv64 on `qemu-system-riscv64 -machine virt` (guests/riscv64/README.md)."""

from __future__ import annotations

from arch.riscv import Sv39PageTable, Sv48PageTable, Sv57PageTable
from arch.riscv.permissions import OPTION_MXR, OPTION_SUM, RiscvPermissions

from ..profile import OptionSet, Profile, RamLayout, Variant
from ..session import GuestSession
from ..tableset import TableSet

RAM_BASE = 0x8000_0000  # virt: DRAM at 0x8000_0000 (QEMU-NOTES, RISC-V)
RAM_SIZE = 2 << 30
MSTATUS_SUM = 1 << 18  # privileged spec 3.1.6.3
MSTATUS_MXR = 1 << 19
EBREAK = 0x0010_0073  # the tag's trap instruction (ABI.md)
CAUSES = {
    1: "instruction access fault",
    2: "illegal instruction",
    3: "breakpoint",
    5: "load access fault",
    7: "store access fault",
    12: "instruction page fault",
    13: "load page fault",
    15: "store page fault",
}


class Riscv64Profile(Profile):
    """Sv39/Sv48/Sv57 probed from M-mode with MPRV (loads/stores) and mret (fetches)."""

    def option_sets(self, full: bool, variant: Variant | None = None) -> list[OptionSet]:
        if not full:
            return [OptionSet("S", 0)]
        return [
            OptionSet("S", 0),
            OptionSet("S+SUM", OPTION_SUM),
            OptionSet("S+MXR", OPTION_MXR),
            OptionSet("S+SUM+MXR", OPTION_SUM | OPTION_MXR),
            OptionSet("U", 1),
            OptionSet("U+MXR", 1 | OPTION_MXR),
        ]

    def debug_read(
        self, session: GuestSession, tables: TableSet, variant: Variant, vaddrs: list[int]
    ) -> list[bytes | None] | None:
        """The gdbstub translates with the current satp and privilege, and (measured on QEMU
        10.0.2) applies the load permission checks: pause the guest, load the table into satp at
        S privilege (gdb's virtual `priv` register) with SUM and MXR set so every leaf is
        readable, read, restore."""
        gdb = session.machine.gdb
        if gdb is None:
            return None
        satp = variant.mailbox_mode << 60 | tables.roots[0] >> 12
        with gdb.paused():
            saved = gdb.read_registers(["satp", "priv", "mstatus"])
            gdb.write_registers({"satp": satp, "priv": 1, "mstatus": saved["mstatus"] | MSTATUS_SUM | MSTATUS_MXR})
            try:
                return gdb.read_memory_many(vaddrs, 8)
            finally:
                gdb.write_registers(saved)

    def explain_cause(self, cause: int) -> str:
        return f"mcause {cause} ({CAUSES.get(cause, 'unexpected')})"


def _variant(name: str, make, mode: int) -> Variant:  # type: ignore[no-untyped-def]
    return Variant(name, lambda ram: TableSet([make(ram)]), mode, description=f"satp MODE {mode}")


def riscv64_profile() -> Profile:
    """The riscv64 profile."""
    return Riscv64Profile(
        arch="riscv64",
        binary="qemu-system-riscv64",
        apt_package="qemu-system-riscv (trixie, bookworm-backports) or qemu-system-misc",
        machine_args=("-machine", "virt", "-cpu", "rv64", "-smp", "1", "-bios", "none"),
        ram_base=RAM_BASE,
        ram_size=RAM_SIZE,
        zig_args=("-target", "riscv64-freestanding", "-mcpu=generic_rv64"),
        layout=RamLayout(
            arrays=(0x8010_0000, 0x8410_0000),
            table_pool=(0x8410_0000, 0x8C00_0000),
            data_window=(0x8C00_0000, RAM_BASE + RAM_SIZE),
        ),
        variants={
            "sv39": _variant("sv39", Sv39PageTable, 8),
            "sv48": _variant("sv48", Sv48PageTable, 9),
            "sv57": _variant("sv57", Sv57PageTable, 10),
        },
        trap_instruction=EBREAK,
        model_for=lambda variant: RiscvPermissions(),
    )
