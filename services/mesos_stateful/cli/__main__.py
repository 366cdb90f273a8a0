from mesos_stateful.cli.main import main

main()
