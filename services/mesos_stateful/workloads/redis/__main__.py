from mesos_stateful.workloads.redis.main import main

main()
