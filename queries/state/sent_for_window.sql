-- sent_for_window: how many of a window's events `reconcile recover --apply` sent (the recovery journal). A run of
-- that window then reads the sink up to its as_of, where the recoveries landed (reconcile/window.py sink_until).
-- An event left in doubt (`sending`: the apply died mid-call) may have been sent too.
SELECT count(*) AS sent FROM recovery_journal WHERE window_key = $window_key AND status IN ('sent', 'sending');
