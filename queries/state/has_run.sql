-- has_run: whether the state recorded a run of a window (recover --apply journals only into that run's state).
SELECT count(*) > 0 AS recorded FROM runs WHERE window_key = $window_key;
