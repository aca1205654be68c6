"""Audit tools over the exam event log: export, verify, point in time, rebuild, alerts.

Command line: ``python -m audit <command>`` (``proctor-audit``). Pure parts (hash chain,
episodes, time ranges, diffs, dedupe) are small modules without I/O; ``kafka_source`` reads
the log and ``commands`` wires them to the stores.
"""
