"""Support code of bench/redis_failover.py: processes, Redis probing, Sentinel, the suite, reports."""
