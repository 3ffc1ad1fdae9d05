"""The checker: predicts every probe's outcome from `query()` plus the architecture's
permission model, runs the probes on the real (emulated) MMU, and compares.

A probe succeeds in prediction and observation alike only if the access completed at the
predicted physical address (a load must return the tag of that address, a fetch must trap on the
tag at the probe address, a store must land in that word); a predicted fault must carry the exact
cause and fault address. Everything else is a mismatch, unless a known emulator deviation of the
running QEMU version accounts for it, in which case it is reported as that deviation.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from arch import MappingFlags, PagingError, QueryBatch, WalkBatch
from arch.permissions import FETCH, LOAD, STORE, Prediction

from . import mailbox as mb
from .profile import Comparison, OptionSet, Profile, Variant
from .session import BatchResult, GuestSession
from .tableset import TableSet

MAX_KEPT_MISMATCHES = 50
QUICK_HOLE_STRIDE = 16  # a quick check probes the hole after every 16th page
HOLE_SPANS = (0x1000, 0x20_0000, 0x4000_0000, 0x80_0000_0000)


@dataclass(frozen=True)
class Mismatch:
    """One probe whose observation differs from the prediction."""

    vaddr: int
    access: str
    option_set: str
    predicted_ok: bool
    predicted_paddr: int | None
    predicted_cause: int
    predicted_addr: int
    observed_ok: bool
    observed_value: int
    observed_cause: int
    observed_addr: int
    reason: str
    walk: tuple[str, ...] = ()


@dataclass
class CheckStats:
    """Totals of one or more checks on one variant."""

    pages: int = 0
    probes: int = 0
    mismatches: int = 0
    skipped: int = 0
    deviations: Counter[str] = field(default_factory=Counter)
    kept: list[Mismatch] = field(default_factory=list)
    guest_seconds: float = 0.0
    observed: int = 0
    check_seconds: float = 0.0
    observer_seconds: float = 0.0

    def add_mismatches(self, found: list[Mismatch]) -> None:
        """Count mismatches, keeping the first few for the report."""
        self.mismatches += len(found)
        room = MAX_KEPT_MISMATCHES - len(self.kept)
        self.kept.extend(found[: max(room, 0)])


@dataclass(frozen=True)
class Expected:
    """What the library and the permission model predict for the probes of one option set."""

    vaddrs: np.ndarray
    access: np.ndarray
    option_set: OptionSet
    predicted: Prediction
    paddr: np.ndarray
    mapped: np.ndarray
    flags: np.ndarray

    def comparison(self, chunk: np.ndarray, result: BatchResult | None) -> Comparison:
        """The probes at `chunk` with what the guest saw (nothing yet when `result` is None)."""
        count = len(chunk)
        nothing = np.zeros(count, dtype=np.uint64)
        return Comparison(
            vaddrs=self.vaddrs[chunk],
            access=self.access[chunk],
            user=self.option_set.user,
            options=self.option_set.bits,
            predicted=Prediction(self.predicted.ok[chunk], self.predicted.cause[chunk], self.predicted.addr[chunk]),
            paddr=self.paddr[chunk],
            mapped=self.mapped[chunk],
            flags=self.flags[chunk],
            observed_ok=np.zeros(count, dtype=bool) if result is None else result.outcome == mb.OUTCOME_OK,
            observed_cause=nothing if result is None else result.cause,
            observed_value=nothing if result is None else result.value,
            observed_addr=nothing if result is None else result.addr,
        )


@dataclass(frozen=True)
class ProbeSet:
    """Virtual addresses and access kinds to probe under every option set of a check."""

    vaddrs: np.ndarray
    access: np.ndarray


@dataclass(frozen=True)
class Plan:
    """The probes of one check and what the library predicts for them."""

    probes: ProbeSet
    pages: int
    walk: WalkBatch
    query: QueryBatch
    full: bool


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort beats numpy's hash-based unique for uint64 here)."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def _occurrence_rank(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key (0 for the first)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(ordered)), 0))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(ordered)) - group_start
    return rank


def _alias_rounds(keys: np.ndarray) -> list[np.ndarray]:
    """Split positions into rounds in which no key repeats (the n-th occurrence of each key
    goes to round n)."""
    if not len(keys):
        return []
    rank = _occurrence_rank(keys)
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


class Checker:
    """Checks a table set against the guest of one session."""

    def __init__(self, profile: Profile, variant: Variant, session: GuestSession, tables: TableSet) -> None:
        self.profile = profile
        self.variant = variant
        self.session = session
        self.tables = tables
        self.model = profile.model_for(variant)
        version = session.machine.version
        self.deviations = [d for d in profile.deviations if d.applies_to(version, variant.name)]
        self.reserved = profile.reserved_ranges(session.image)
        self.stats = CheckStats()

    # -- probe selection ---------------------------------------------------------------------
    def probe_set(self, full: bool, rng: np.random.Generator) -> tuple[ProbeSet, int]:
        """What to probe: every mapped page (both boundary words for a full check, one random
        word otherwise), holes next to them at every level, and non-canonical addresses."""
        mapped = self.tables.mappings()
        keep = ~self._reserved(mapped.vaddr)
        starts, sizes = mapped.vaddr[keep], mapped.size[keep]
        if full:
            words = np.concatenate([starts, starts + sizes - np.uint64(8)])
            # pages sharing a frame store to different words, so their stores can run in one batch
            shift = (_occurrence_rank(mapped.paddr[keep]) % 256).astype(np.uint64) << np.uint64(3)
            store_words = np.concatenate([starts + shift, starts + sizes - np.uint64(8) - shift])
            holes = np.concatenate(
                [starts - np.uint64(8), starts + sizes] + [starts ^ np.uint64(s) for s in HOLE_SPANS]
            )
            holes = holes[~self.tables.query_many(holes).mapped & ~self._reserved(holes)]
            extra = np.array(
                self.profile.non_canonical_addresses(self.tables.primary.metadata.VA_MAX_BITS), dtype=np.uint64
            )
            extra = extra[self.tables.owner_index(extra) < 0]
            others = _unique(np.concatenate([holes, extra]))
            vaddrs = np.concatenate([words, others, store_words, others, words, others])
            access = np.repeat(np.array([LOAD, STORE, FETCH], dtype=np.uint8), len(words) + len(others))
            return ProbeSet(vaddrs, access), int(keep.sum())
        else:
            offsets = (rng.integers(0, 1 << 62, len(starts), dtype=np.uint64) % (sizes >> np.uint64(3))) << np.uint64(3)
            holes = _unique((starts + sizes)[::QUICK_HOLE_STRIDE])  # a sample: faults are slow to probe
            holes = holes[~self.tables.query_many(holes).mapped & ~self._reserved(holes)]
            vaddrs = np.concatenate([starts + offsets, holes])
            return ProbeSet(vaddrs, np.full(len(vaddrs), LOAD, dtype=np.uint8)), int(keep.sum())

    def _reserved(self, vaddrs: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(vaddrs), dtype=bool)
        for start, end in self.reserved:
            hit |= (vaddrs >= np.uint64(start)) & (vaddrs < np.uint64(end))
        return hit

    # -- running -----------------------------------------------------------------------------
    def check(self, full: bool = True, seed: int = 0) -> None:
        """Probe everything mapped so far (plus holes) under every option set."""
        self.execute(self.plan(full, seed))

    def plan(self, full: bool = True, seed: int = 0) -> Plan:
        """Choose the probes and predict their translations from the tables as they are now."""
        started = time.perf_counter()
        # the guest's own mappings (if any) change upper-level tables: install them before walking
        self._install_guest_mappings(self.profile.option_sets(full, self.variant)[0])
        probes, pages = self.probe_set(full, np.random.default_rng(seed))
        walk = self.tables.walk_many(probes.vaddrs)
        plan = Plan(probes, pages, walk, self.tables.query_walk(walk), full)
        self.stats.check_seconds += time.perf_counter() - started
        return plan

    def execute(self, plan: Plan) -> None:
        """Run a plan's probes under every option set and compare (the tables in RAM may have
        changed since the plan was made: that is how `sensitivity` mutates entries)."""
        started = time.perf_counter()
        probes, walk, query, full = plan.probes, plan.walk, plan.query, plan.full
        self.stats.pages += plan.pages
        for option_set in self.profile.option_sets(full, self.variant):
            self._install_guest_mappings(option_set)
            expected = Expected(
                probes.vaddrs,
                probes.access,
                option_set,
                self.model.predict(self.tables.primary, walk, probes.access, option_set.user, option_set.bits),
                query.paddr,
                query.mapped,
                query.flags,
            )
            unsafe = self._unsafe(expected)
            self._run(np.flatnonzero((probes.access != STORE) & ~unsafe), expected)
            stores = np.flatnonzero((probes.access == STORE) & ~unsafe)
            # two stores to one physical word in a batch would overwrite each other's evidence
            store_words = np.where(query.mapped[stores], query.paddr[stores] & ~np.uint64(7), probes.vaddrs[stores])
            for round_ in _alias_rounds(store_words):
                self._run(stores[round_], expected)
        observing = time.perf_counter()
        self._observe(probes, query, full)
        self.stats.observer_seconds += time.perf_counter() - observing
        self.stats.check_seconds += time.perf_counter() - started

    def _observe(self, probes: ProbeSet, query: QueryBatch, full: bool) -> None:
        """The second observer: QEMU's debug translation must give every probed load address
        the physical address query() predicts, and (in full checks) none to holes."""
        loads = np.flatnonzero((probes.access == LOAD) & (query.mapped | full))
        vaddrs = probes.vaddrs[loads]
        values = self.profile.debug_read(self.session, self.tables, self.variant, vaddrs.tolist())
        if values is None:
            return
        found: list[Mismatch] = []
        low, high = self.profile.layout.data_window
        for i, value in enumerate(values):
            index = loads[i]
            mapped = bool(query.mapped[index])
            predicted = int(query.paddr[index]) & ~7
            if mapped and not low <= predicted < high:
                continue  # no tag there to reveal the address
            got = None if value is None else mb.tag_paddr(int.from_bytes(value, "little"))
            if (got is None) != (not mapped) or (mapped and got != predicted):
                found.append(self._observer_mismatch(int(vaddrs[i]), predicted if mapped else None, got, len(found)))
        self.stats.observed += len(values)
        self.stats.add_mismatches(found)

    def _observer_mismatch(self, vaddr: int, predicted: int | None, got: int | None, earlier: int) -> Mismatch:
        seen = "no translation" if got is None else f"physical {got:#x}"
        return Mismatch(
            vaddr=vaddr,
            access="debug",
            option_set="gdbstub",
            predicted_ok=predicted is not None,
            predicted_paddr=predicted,
            predicted_cause=0,
            predicted_addr=0,
            observed_ok=got is not None,
            observed_value=got or 0,
            observed_cause=0,
            observed_addr=0,
            reason=f"QEMU's debug translation gives {seen}",
            walk=self.describe_walk(vaddr) if len(self.stats.kept) + earlier < MAX_KEPT_MISMATCHES else (),
        )

    def _unsafe(self, expected: Expected) -> np.ndarray:
        """Probes a deviation says must never be sent (counted, and reported with the reason)."""
        unsafe = np.zeros(len(expected.vaddrs), dtype=bool)
        comparison = expected.comparison(np.arange(len(expected.vaddrs)), None)
        for deviation in self.deviations:
            if deviation.unsafe is not None:
                hit = deviation.unsafe(comparison) & ~unsafe
                self.stats.deviations[deviation.key] += int(hit.sum())
                self.stats.skipped += int(hit.sum())
                unsafe |= hit
        return unsafe

    def _install_guest_mappings(self, option_set: OptionSet) -> None:
        for vaddr, paddr, size, flags in self.profile.guest_mappings(self.session.image, option_set):
            table = self.tables.table_for(vaddr)
            try:
                table.unmap_region(vaddr, size)
            except PagingError:  # not mapped yet: nothing to replace
                pass
            table.map_region(vaddr, paddr, size, MappingFlags(flags), allow_huge=True)

    def _run(self, selected: np.ndarray, expected: Expected) -> None:
        if not len(selected):
            return
        ram = self.session.ram
        assert ram is not None
        order = selected[np.argsort(expected.vaddrs[selected], kind="stable")]  # TLB-friendly order
        low, high = self.profile.layout.data_window
        for start in range(0, len(order), self.session.capacity):
            chunk = order[start : start + self.session.capacity]
            pas = expected.paddr[chunk] & ~np.uint64(7)
            taggable = expected.mapped[chunk] & (pas >= np.uint64(low)) & (pas < np.uint64(high))
            slots = (pas[taggable] - np.uint64(ram.base)) >> np.uint64(3)
            tags = mb.tag_words(pas[taggable], self.profile.trap_instruction)
            ram.words[slots] = tags
            words = mb.probe_words(expected.vaddrs[chunk], expected.access[chunk])
            started = time.perf_counter()
            result = self.session.run_batch(self.tables.roots, words, expected.option_set.bits)
            self.stats.guest_seconds += time.perf_counter() - started
            landed = np.zeros(len(chunk), dtype=bool)
            landed[taggable] = ram.words[slots] == words[taggable]
            ram.words[slots] = tags  # restore what stores overwrote
            self._compare(chunk, result, landed, expected)
            self.stats.probes += len(chunk)

    # -- comparison --------------------------------------------------------------------------
    def _compare(self, chunk: np.ndarray, result: BatchResult, landed: np.ndarray, expected: Expected) -> None:
        seen = expected.comparison(chunk, result)
        predicted = seen.predicted
        vaddrs, access = seen.vaddrs, seen.access
        expected_tag = mb.tag_words(seen.paddr & ~np.uint64(7), self.profile.trap_instruction)
        load_ok = (access == LOAD) & (result.value == expected_tag)
        fetch_ok = (access == FETCH) & (result.value == vaddrs)
        store_ok = (access == STORE) & landed
        good_ok = predicted.ok & seen.observed_ok & (load_ok | fetch_ok | store_ok)
        good_fault = (
            ~predicted.ok & ~seen.observed_ok & (result.cause == predicted.cause) & (result.addr == predicted.addr)
        )
        bad = ~(good_ok | good_fault)
        if not bad.any():
            return
        for deviation in self.deviations:
            if deviation.explains is not None:
                hit = bad & deviation.explains(seen)
                self.stats.deviations[deviation.key] += int(hit.sum())
                bad &= ~hit
        found: list[Mismatch] = []
        for i in np.flatnonzero(bad).tolist():
            found.append(
                Mismatch(
                    vaddr=int(vaddrs[i]),
                    access=mb.Access(int(access[i])).name.lower(),
                    option_set=expected.option_set.name,
                    predicted_ok=bool(predicted.ok[i]),
                    predicted_paddr=int(seen.paddr[i]) if seen.mapped[i] else None,
                    predicted_cause=int(predicted.cause[i]),
                    predicted_addr=int(predicted.addr[i]),
                    observed_ok=bool(seen.observed_ok[i]),
                    observed_value=int(result.value[i]),
                    observed_cause=int(result.cause[i]),
                    observed_addr=int(result.addr[i]),
                    reason=_reason(
                        int(access[i]),
                        bool(predicted.ok[i]),
                        bool(seen.observed_ok[i]),
                        int(result.value[i]),
                        bool(landed[i]),
                    ),
                    walk=self.describe_walk(int(vaddrs[i]))
                    if len(self.stats.kept) + len(found) < MAX_KEPT_MISMATCHES
                    else (),
                )
            )
        self.stats.add_mismatches(found)

    def explain(self, vaddr: int) -> list[str]:
        """Probe one address with every access under every option set; one line each with the
        prediction beside what the MMU did."""
        vaddrs = np.full(3, vaddr & ~7, dtype=np.uint64)
        access = np.array([LOAD, STORE, FETCH], dtype=np.uint8)
        walk = self.tables.walk_many(vaddrs)
        query = self.tables.query_walk(walk)
        ram = self.session.ram
        assert ram is not None
        low, high = self.profile.layout.data_window
        pa = int(query.paddr[0]) & ~7
        if query.mapped[0] and low <= pa < high:
            ram.write_word(pa, int(mb.tag_words(np.array([pa], dtype=np.uint64), self.profile.trap_instruction)[0]))
        rows = []
        for option_set in self.profile.option_sets(True, self.variant):
            self._install_guest_mappings(option_set)
            predicted = self.model.predict(self.tables.primary, walk, access, option_set.user, option_set.bits)
            for i in range(3):
                word = mb.probe_words(vaddrs[i : i + 1], access[i : i + 1])
                result = self.session.run_batch(self.tables.roots, word, option_set.bits)
                ok = int(result.outcome[0]) == mb.OUTCOME_OK
                want = "ok" if predicted.ok[i] else self.profile.explain_cause(int(predicted.cause[i]))
                got = (
                    f"ok (value {int(result.value[0]):#x})" if ok else self.profile.explain_cause(int(result.cause[0]))
                )
                agree = (
                    "agree"
                    if ok == bool(predicted.ok[i]) and (ok or int(result.cause[0]) == int(predicted.cause[i]))
                    else "DIFFER"
                )
                rows.append(
                    f"  {option_set.name:<12}{mb.Access(i).name.lower():<6} "
                    f"predicted {want:<34} observed {got:<40} {agree}"
                )
                if query.mapped[0] and low <= pa < high:
                    ram.write_word(
                        pa, int(mb.tag_words(np.array([pa], dtype=np.uint64), self.profile.trap_instruction)[0])
                    )
        return rows

    def describe_walk(self, vaddr: int) -> tuple[str, ...]:
        """The library's walk of `vaddr`, level by level: entry address, raw bits, decoding."""
        walk = self.tables.walk_many(np.array([vaddr], dtype=np.uint64))
        if not walk.valid[0]:
            return (f"{vaddr:#x} is not canonical for any table",)
        table = self.tables.table_for(vaddr)
        lines = []
        leaf_level = int(walk.leaf_level[0])
        for level in range(table.levels):
            entry = int(walk.entries[level, 0])
            where = int(walk.entry_paddrs[level, 0])
            is_leaf = level == leaf_level
            text = (
                "empty: nothing mapped below"
                if entry == table.empty_entry(level)
                else table.codec.describe(entry, is_leaf)
            )
            lines.append(f"level {level} entry @{where:#x}: {text}")
            if is_leaf or entry == table.empty_entry(level):
                break
        return tuple(lines)


def _reason(access: int, predicted_ok: bool, observed_ok: bool, value: int, landed: bool) -> str:
    """Why a probe counts as a mismatch, in words."""
    if predicted_ok and not observed_ok:
        return "predicted to succeed, but faulted"
    if not predicted_ok and observed_ok:
        return "predicted to fault, but succeeded"
    if not predicted_ok:
        return "faulted with a different cause or address"
    if access == LOAD:
        return f"load read the word of physical {mb.tag_paddr(value):#x}"
    if access == STORE and not landed:
        return "store did not land at the predicted physical address"
    return "fetch trapped at a different address"
