"""Runs a scenario: applies each operation to the table set in guest RAM and performs each
`check` with the checker. Operations are validated against the profile's RAM window for
scenario data and its reserved virtual ranges; any failure names the scenario line."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from arch import PagingError

from .checker import Checker, CheckStats
from .profile import Profile, Variant
from .scenario import Operation, ScenarioError
from .session import GuestSession
from .tableset import TableSet

Progress = Callable[[str], None]


class ScenarioRunner:
    """Applies operations to one variant's tables and checks them on its guest."""

    def __init__(
        self,
        profile: Profile,
        variant: Variant,
        session: GuestSession,
        *,
        seed: int = 0,
        source: str = "<scenario>",
        progress: Progress | None = None,
    ) -> None:
        assert session.ram is not None
        self.profile = profile
        self.session = session
        self.tables: TableSet = variant.make_tables(session.ram)
        self.checker = Checker(profile, variant, session, self.tables)
        self.reserved = profile.reserved_ranges(session.image)
        self.seed = seed
        self.source = source
        self.progress = progress
        self.operations = 0
        self.checks = 0

    @property
    def stats(self) -> CheckStats:
        """What the checks so far found."""
        return self.checker.stats

    def run(self, operations: Iterable[Operation]) -> CheckStats:
        """Apply every operation; check at the end too if the scenario never did."""
        for operation in operations:
            self.apply(operation)
        if self.checks == 0:
            self.checker.check(full=True, seed=self.seed)
        return self.stats

    def apply(self, operation: Operation) -> None:
        """Apply one operation (a `check` runs the probes)."""
        self.operations += 1
        if operation.kind == "check":
            self.checks += 1
            if self.progress is not None:
                self.progress(f"line {operation.line}: check {'full' if operation.full else 'quick'}")
            self.checker.check(full=operation.full, seed=self.seed + self.checks)
            return
        try:
            apply_operation(self.tables, self.profile, self.reserved, operation)
            return
        except (PagingError, ValueError, TypeError) as error:
            failure = f"{operation.describe()}: {error}"
        # Raised here, not in the handler: the library's traceback, whose frames may hold numpy
        # views of guest RAM, is then not kept as this error's context, and the session can
        # unmap the RAM file while the error propagates (harness/machine.py, "RAM views").
        raise ScenarioError(self.source, operation.line, 1, failure)


def apply_operation(tables: TableSet, profile: Profile, reserved: list[tuple[int, int]], op: Operation) -> None:
    """Apply one table-changing operation, enforcing the data window and reserved ranges."""
    assert op.va is not None
    table = tables.table_for(op.va)
    if op.kind in ("map", "map_region"):
        length = op.size if op.kind == "map" else op.length
        assert length is not None
        for start, end in reserved:
            if op.va < end and start < op.va + length:
                raise ValueError(
                    f"virtual range [{op.va:#x}, {op.va + length:#x}) overlaps [{start:#x}, {end:#x}), "
                    f"which the {profile.arch} guest reserves for itself"
                )
    if op.kind == "map":
        assert op.pa is not None and op.size is not None and op.flags is not None
        profile.layout.check_data(op.pa & ~(op.size - 1), op.size)
        table.map(op.va, op.pa, op.size, op.flags)  # type: ignore[arg-type]  # 512G: UnsupportedPageSize
    elif op.kind == "map_region":
        assert op.pa is not None and op.length is not None and op.flags is not None and op.allow_huge is not None
        profile.layout.check_data(op.pa, op.length)
        table.map_region(op.va, op.pa, op.length, op.flags, op.allow_huge)
    elif op.kind == "unmap":
        table.unmap(op.va)
    elif op.kind == "unmap_region":
        assert op.length is not None
        table.unmap_region(op.va, op.length)
    elif op.kind == "protect":
        assert op.flags is not None
        table.protect(op.va, op.flags)
    elif op.kind == "protect_region":
        assert op.length is not None and op.flags is not None
        table.protect_region(op.va, op.length, op.flags)
    elif op.kind == "remap":
        assert op.pa is not None and op.flags is not None
        _, _, size = table.query(op.va)
        profile.layout.check_data(op.pa & ~(size - 1), size)
        table.remap(op.va, op.pa, op.flags)
    else:
        raise AssertionError(op.kind)
