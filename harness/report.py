"""Verdicts for people and for machines: the per-variant summary table, mismatch details, and
JSON objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TextIO

from .checker import CheckStats, Mismatch
from .profile import Profile


@dataclass
class VariantReport:
    """The outcome of checking one architecture variant."""

    arch: str
    mode: str
    qemu_version: str
    stats: CheckStats
    seconds: float
    boot_seconds: float
    deviation_notes: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        """No mismatch and no error."""
        return self.error is None and self.stats.mismatches == 0

    @property
    def probes_per_second(self) -> float:
        """Verified probes per second while checking: prediction, guest run and comparison (table
        building, boot and the second observer excluded; those have their own figures)."""
        probing = self.stats.check_seconds - self.stats.observer_seconds
        return self.stats.probes / probing if probing > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        """The machine-readable form (one object per arch/mode)."""
        return {
            "arch": self.arch,
            "mode": self.mode,
            "qemu_version": self.qemu_version,
            "passed": self.passed,
            "pages": self.stats.pages,
            "probes": self.stats.probes,
            "mismatches": self.stats.mismatches,
            "deviations": dict(self.stats.deviations),
            "skipped_probes": self.stats.skipped,
            "debug_translations": self.stats.observed,
            "seconds": round(self.seconds, 3),
            "boot_seconds": round(self.boot_seconds, 3),
            "guest_seconds": round(self.stats.guest_seconds, 3),
            "check_seconds": round(self.stats.check_seconds, 3),
            "observer_seconds": round(self.stats.observer_seconds, 3),
            "probes_per_second": round(self.probes_per_second),
            "error": self.error,
            "mismatch_details": [mismatch_json(m) for m in self.stats.kept],
        }


def mismatch_json(m: Mismatch) -> dict[str, object]:
    """One mismatch as JSON (addresses in hex)."""
    return {
        "vaddr": f"{m.vaddr:#x}",
        "access": m.access,
        "options": m.option_set,
        "reason": m.reason,
        "predicted": {
            "ok": m.predicted_ok,
            "paddr": None if m.predicted_paddr is None else f"{m.predicted_paddr:#x}",
            "cause": f"{m.predicted_cause:#x}",
            "addr": f"{m.predicted_addr:#x}",
        },
        "observed": {
            "ok": m.observed_ok,
            "value": f"{m.observed_value:#x}",
            "cause": f"{m.observed_cause:#x}",
            "addr": f"{m.observed_addr:#x}",
        },
        "walk": list(m.walk),
    }


def write_json(reports: list[VariantReport], out: TextIO) -> None:
    """One JSON object per line, per arch/mode."""
    for report in reports:
        out.write(json.dumps(report.as_json()) + "\n")


def write_table(reports: list[VariantReport], profiles: dict[str, Profile], out: TextIO) -> None:
    """The human summary: a row per arch/mode, then every kept mismatch, decoded."""
    header = (
        f"{'arch':<12}{'mode':<12}{'qemu':<9}{'pages':>9}{'probes':>10}{'mismatch':>9}{'deviat.':>8}"
        f"{'seconds':>9}{'probes/s':>11}  verdict"
    )
    out.write(header + "\n" + "-" * len(header) + "\n")
    for r in reports:
        verdict = "PASS" if r.passed else ("ERROR" if r.error else "FAIL")
        deviations = sum(r.stats.deviations.values())
        out.write(
            f"{r.arch:<12}{r.mode:<12}{r.qemu_version:<9}{r.stats.pages:>9}{r.stats.probes:>10}"
            f"{r.stats.mismatches:>9}{deviations:>8}{r.seconds:>9.2f}{r.probes_per_second:>11,.0f}  {verdict}\n"
        )
    for r in reports:
        profile = profiles[r.arch]
        if r.error:
            out.write(f"\n{r.arch}/{r.mode}: ERROR\n{r.error}\n")
        for key, count in sorted(r.stats.deviations.items()):
            note = r.deviation_notes.get(key, "")
            out.write(f"\n{r.arch}/{r.mode}: {count} probe(s) show known QEMU deviation '{key}': {note}\n")
        for m in r.stats.kept:
            out.write(f"\n{r.arch}/{r.mode}: MISMATCH at {m.vaddr:#x} ({m.access}, {m.option_set}): {m.reason}\n")
            out.write(
                f"  predicted: {_outcome(profile, m.predicted_ok, m.predicted_cause, m.predicted_addr)}"
                + (f", translating to {m.predicted_paddr:#x}" if m.predicted_paddr is not None else "")
                + "\n"
            )
            out.write(
                f"  observed:  {_outcome(profile, m.observed_ok, m.observed_cause, m.observed_addr)}"
                + (f", value {m.observed_value:#x}" if m.observed_ok else "")
                + "\n"
            )
            for line in m.walk:
                out.write(f"    {line}\n")
        if r.stats.mismatches > len(r.stats.kept):
            out.write(f"\n{r.arch}/{r.mode}: ... and {r.stats.mismatches - len(r.stats.kept)} more mismatches\n")


def _outcome(profile: Profile, ok: bool, cause: int, addr: int) -> str:
    if ok:
        return "access completes"
    return f"fault, {profile.explain_cause(cause)}, address {addr:#x}"
