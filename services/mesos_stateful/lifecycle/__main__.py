from mesos_stateful.lifecycle.main import main

main()
