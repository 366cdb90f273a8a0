from mesos_stateful.executor.main import main

main()
