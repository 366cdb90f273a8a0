from mesos_stateful.suite.main import main

main()
