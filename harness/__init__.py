"""harness: checks page tables built by `arch` on QEMU's emulated MMUs, probe by probe.

`python -m harness check --arch riscv64` boots a tiny probe guest, builds the tables directly in
its RAM, and compares every load, store and fetch with what `query()` and the architecture's
permission model predict.
"""
