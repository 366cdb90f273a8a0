from mesos_stateful.workloads.mysql.main import main

main()
