-- forget_run: before a window is recorded again, drop what its previous run recorded: its run row, hop figures
-- (with their recovered counts and thresholds), pending events and the settlements it made. Settlements of its events
-- made by later runs are kept.
DELETE FROM runs WHERE window_key = $window_key;
DELETE FROM run_hops WHERE window_key = $window_key;
DELETE FROM run_recovered WHERE window_key = $window_key;
DELETE FROM run_thresholds WHERE window_key = $window_key;
DELETE FROM pending WHERE window_key = $window_key;
DELETE FROM settlements WHERE settled_in = $window_key;
