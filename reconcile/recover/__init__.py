"""Recovery: from a run's verdicts to the lost events sent again, planned, reviewed, applied once, and proven.

plan.py    `reconcile recover RUN_DIR`: per event the most exact route (re-put, replay window, none), plan.json/.csv
payload.py the original events read again from the evidence's source_ref (bus log line, DLQ message), read-only
apply.py   `reconcile recover --apply PLAN`: PutRecords / StartReplay, journaled in the run state, resumable
"""
