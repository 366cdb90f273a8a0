from mesos_stateful.localcluster.main import main

main()
