-- over_budget: earlier windows whose hop the losses a later run settled leave over its threshold
-- (summary.fold_carried) are `loss` in the history from then on, as their figures are: an auditor reading the status
-- column finds the loss on the day it happened. An incomplete run stays `incomplete` (it outranks a loss), and the
-- exit code stays the one the run exited with.
UPDATE runs SET status = 'loss'
WHERE window_key IN (SELECT unnest($window_keys::VARCHAR[])) AND status IN ('clean', 'pending');
