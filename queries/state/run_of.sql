-- run_of: the state's run of a window, if any (recover --apply journals only into that run's state, and only for the
-- plan made from that very run: when it was made, where it lies).
SELECT generated_at, out_dir FROM runs WHERE window_key = $window_key;
