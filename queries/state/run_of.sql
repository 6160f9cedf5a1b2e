-- run_of: the state's run of a window, if any (recover --apply journals only into that run's state, and only for the
-- plan made from that very run: when it was made, where it lies; a re-run that read a store in part never replaces a
-- run that read them whole: its status).
SELECT generated_at, out_dir, status FROM runs WHERE window_key = $window_key;
