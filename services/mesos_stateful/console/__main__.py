from mesos_stateful.console.main import main

main()
