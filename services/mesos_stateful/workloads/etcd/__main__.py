from mesos_stateful.workloads.etcd.main import main

main()
