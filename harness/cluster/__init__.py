"""Several replicas behind a router in one SimPy run (between harness/sweep and harness/engine:
it builds engine replicas and feeds them one arrival process)."""
